"""fakehw: fake NVIDIA datacenter GPUs behind look-alikes of nvidia-smi and nvitop."""

__version__ = "0.1.0"
