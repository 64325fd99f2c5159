"""DCGM's return codes (``dcgmReturn_t``) and their texts (``errorString``), and the
failures dcgmi reports with them. dcgmi exits with the low byte of the code: -21 is 235."""

from __future__ import annotations

OK = 0
BADPARAM = -1
PARSE_FAILED = -2  # dcgmi's own: an exception out of its command-line checks
GENERIC_ERROR = -3
NOT_CONFIGURED = -5
NOT_SUPPORTED = -6
NO_DATA = -14
GPU_IS_LOST = -18
CONNECTION_NOT_VALID = -21
NVVS_ERROR = -30
NVVS_ISOLATE_ERROR = -51

ERROR_STRINGS = {
    OK: "Success",
    BADPARAM: "Bad parameter passed to function",
    GENERIC_ERROR: "Generic unspecified error",
    NOT_CONFIGURED: "Setting not configured",
    NOT_SUPPORTED: "Feature not supported",
    NO_DATA: "No data is available",
    GPU_IS_LOST: "GPU is lost",
    CONNECTION_NOT_VALID: "Host engine connection invalid/disconnected",
    NVVS_ERROR: "DCGM GPU Diagnostic returned an error",
    NVVS_ISOLATE_ERROR: "The diagnostic returned an error that indicates the need to drain the GPU",
}
TCLAP_EXIT = 1  # TCLAP's own exit on a command line it cannot parse


def exit_code(status: int) -> int:
    """What the shell sees: ``exit((unsigned char)status)``."""
    return status & 0xFF


class DcgmiError(Exception):
    """A failure dcgmi reports and exits on: ``lines`` to ``stream``, exit ``code``."""

    def __init__(
        self, lines: list[str], status: int, stream: str = "stdout", note: str | None = None
    ) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
        self.status = status
        self.stream = stream  # "stdout" or "stderr"
        self.note = note  # fakehw's own reason, for stderr after dcgmi's words (or None)


class ParseFailed(DcgmiError):
    """dcgmi's own check of a parsed command line (``CmdLineParseException``): two lines
    on stderr, exit 254."""

    def __init__(self, text: str, arg: str | None = None) -> None:
        where = f" for arg {arg}" if arg else ""
        lines = [f"Error: {text}{where}.", "An error occurred trying to parse the command line."]
        super().__init__(lines, PARSE_FAILED, "stderr")
