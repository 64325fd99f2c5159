"""The ``fakehw`` command's errors and exit codes: one clear line on stderr (``fakehw:
...``) and one of these codes, never a traceback."""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # `status` of a daemon that is not running (LSB convention)
EXIT_NOT_ANSWERING = 4  # `status` of a daemon whose process is there but does not answer


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code
