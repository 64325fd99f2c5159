"""fakehw: fake NVIDIA datacenter GPUs behind look-alikes of nvidia-smi and nvitop.

``TYPE_CHECKING`` is ``typing.TYPE_CHECKING`` without importing ``typing`` (a few
milliseconds a viewer's start-up does not pay): modules on the viewer path import
it from here and import their annotations' types under ``if TYPE_CHECKING:``.
What that path may load is ``fakehw.programs.startup``'s, and a test holds it.
"""

__version__ = "0.1.0"
TYPE_CHECKING = False  # mypy and the other checkers take it as True
