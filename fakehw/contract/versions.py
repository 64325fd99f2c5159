"""The driver stack fakehw impersonates (driver 580, as in tests/real/)."""

DRIVER_VERSION = "580.159.04"
CUDA_VERSION = "13.0"
NVML_VERSION = "13.580.159.04"  # what nvmlSystemGetNVMLVersion returns
NVSMI_NVML_VERSION = "580.159"  # what `nvidia-smi --version` prints as "NVML version"
