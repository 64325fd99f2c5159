"""The shims that put the fake GPUs under other programs: ``fakehw exec`` (an
``nvidia-smi`` first on PATH, fakehw's ``libnvidia-ml.so.1`` first on
LD_LIBRARY_PATH for every program that loads NVML, and a ``sitecustomize`` that
installs the NVML layer under any Python) and ``fakehw shellenv`` (the lines for a
shell). The shims live in the runtime directory, private to the user, rewritten
only when they change; the library is the package's own (built at install, when a C
compiler was there: ``fakehw.nvml.native_directory``)."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys

from fakehw.nvml import native_directory
from fakehw.service.runtime import runtime_paths
from fakehw.tools.errors import EXIT_OK, EXIT_USAGE, CliError

SHIMS = {"nvidia-smi": "fakehw.smi", "dcgmi": "fakehw.dcgmi"}  # name on PATH: module


def shim_directory() -> str:
    """A directory holding an ``nvidia-smi`` that runs fake-nvidia-smi and a ``dcgmi``
    that runs fake-dcgmi."""
    paths = runtime_paths(create=True)
    directory = os.path.join(paths.root, "bin")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name, module in SHIMS.items():
        body = f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m {module} "$@"\n'
        _write_if_changed(os.path.join(directory, name), body, 0o700)
    return directory


SITECUSTOMIZE = '''"""Written by `fakehw exec`: pynvml here talks to the fakehw daemon."""
import os
import sys

if os.environ.get("FAKEHW_NVML") != "native":  # native: pynvml loads libnvidia-ml.so.1
    try:
        from fakehw.nvml.hook import install
    except Exception as exc:  # never stop the program itself
        print(f"fakehw: the NVML layer is not available here: {exc}", file=sys.stderr)
    else:
        install()

# Run the sitecustomize this one hides, if the environment has one.
_here = os.path.dirname(os.path.abspath(__file__))
for _entry in sys.path:
    _candidate = os.path.join(_entry or os.curdir, "sitecustomize.py")
    if os.path.abspath(_entry or os.curdir) != _here and os.path.isfile(_candidate):
        with open(_candidate) as _file:
            exec(compile(_file.read(), _candidate, "exec"), {"__name__": "sitecustomize"})
        break
'''


def python_shim_directory() -> str:
    """A directory for PYTHONPATH: ``sitecustomize.py`` that installs the NVML layer,
    and the ``fakehw`` package itself (a link), so that any Python, whatever
    environment it runs in, can import the few pure-Python modules it needs."""
    import fakehw

    paths = runtime_paths(create=True)
    directory = os.path.join(paths.root, "python")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    _write_if_changed(os.path.join(directory, "sitecustomize.py"), SITECUSTOMIZE, 0o600)
    link = os.path.join(directory, "fakehw")
    package = os.path.dirname(os.path.abspath(fakehw.__file__))
    if os.path.realpath(link) != os.path.realpath(package):
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(package, link)
    return directory


def _write_if_changed(path: str, body: str, mode: int) -> None:
    """Write ``body`` to ``path`` (atomically, ``mode``) unless it holds it already."""
    current = None
    if os.path.exists(path):
        with open(path, errors="replace") as handle:
            current = handle.read()
    if current == body:
        return
    temporary = path + ".tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _shims() -> tuple[str, str]:
    """The nvidia-smi and Python shim directories, or a CliError saying why not."""
    root = runtime_paths().root
    if os.pathsep in root:
        # PATH and PYTHONPATH split at ':': the shell would look in two directories, neither
        # of them this one, and the real nvidia-smi (or none) would run.
        raise CliError(f"the runtime directory {root} has a '{os.pathsep}' in its path, which "
                       "PATH cannot hold: set FAKEHW_RUNTIME_DIR to one without")  # fmt: skip
    try:
        return shim_directory(), python_shim_directory()
    except OSError as exc:
        where = exc.filename or runtime_paths().root
        raise CliError(f"cannot prepare the fake nvidia-smi in {where}: {exc.strerror}") from None


def _real_nvidia_smi(shim: str) -> str | None:
    """A real nvidia-smi the shim would hide, if there is one on PATH."""
    found = shutil.which("nvidia-smi")
    if found and os.path.dirname(os.path.realpath(found)) != os.path.realpath(shim):
        return found
    return None


NO_NATIVE = (
    "fakehw: the native libnvidia-ml.so.1 was not built (no C compiler when fakehw was "
    "installed): only Python programs that import pynvml see the fake GPUs"
)


NVML_MODES = ("native", "python")


def _nvml_mode() -> str:
    """Which NVML the program gets: ``native`` (libnvidia-ml.so.1, for every program),
    or ``python`` (pynvml's Python layer: where the library was not built, for a
    remote daemon, whose files it cannot map, or asked for with FAKEHW_NVML=python)."""
    asked = os.environ.get("FAKEHW_NVML")
    if asked is not None and asked not in NVML_MODES:
        raise CliError(f"FAKEHW_NVML must be native or python, not {asked!r}", EXIT_USAGE)
    if asked == "python" or os.environ.get("FAKEHW_REMOTE"):
        if asked == "native":
            raise CliError("FAKEHW_NVML=native reads a local daemon; with FAKEHW_REMOTE only "
                           "the Python layer (FAKEHW_NVML=python) serves", EXIT_USAGE)  # fmt: skip
        return "python"
    if native_directory() is None:
        if asked == "native":
            raise CliError(NO_NATIVE.removeprefix("fakehw: "))
        print(NO_NATIVE, file=sys.stderr)
        return "python"
    return "native"


def _library_path(environment: dict[str, str]) -> str:
    """LD_LIBRARY_PATH with fakehw's libnvidia-ml.so.1 first. The daemon is started now
    if none runs, as a Python client would: the library only asks a running one."""
    directory = native_directory()
    assert directory is not None
    from fakehw.service.client import Client, DaemonUnavailable

    with contextlib.suppress(DaemonUnavailable, OSError):
        Client.connect(client_name="fakehw-exec").close()
    return os.pathsep.join([directory, *filter(None, [environment.get("LD_LIBRARY_PATH")])])


def run_with_fakes(argv: list[str]) -> int:
    """``fakehw exec -- COMMAND``: run COMMAND with the fake nvidia-smi first on PATH and
    the fake NVML under it: libnvidia-ml.so.1 first on LD_LIBRARY_PATH (for every
    program that loads NVML), or pynvml's Python layer (``_nvml_mode``)."""
    command = list(argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("usage: fakehw exec -- COMMAND [ARGS...]", EXIT_USAGE)
    shim, python = _shims()
    real = _real_nvidia_smi(shim)
    if real:
        print(f"fakehw: {command[0]} will see the fake nvidia-smi, not {real}", file=sys.stderr)
    environment = dict(os.environ)
    environment["PATH"] = shim + os.pathsep + environment.get("PATH", "")
    environment["PYTHONPATH"] = os.pathsep.join(
        [python, *filter(None, [environment.get("PYTHONPATH")])]
    )
    environment["FAKEHW_RUNTIME_DIR"] = runtime_paths(create=True).root
    environment["FAKEHW_NVML"] = _nvml_mode()
    if environment["FAKEHW_NVML"] == "native":
        environment["LD_LIBRARY_PATH"] = _library_path(environment)
    if shutil.which(command[0], path=environment["PATH"]) is None:
        raise CliError(f"command not found: {command[0]}", 127)
    sys.stdout.flush()
    os.execvpe(command[0], command, environment)


def print_shellenv() -> int:
    """``fakehw shellenv``: the lines that put the fake nvidia-smi first on PATH and
    fakehw's libnvidia-ml.so.1 first on LD_LIBRARY_PATH (where it was built)."""
    shim, _ = _shims()
    real = _real_nvidia_smi(shim)
    if real:
        print(f"fakehw: this shell's nvidia-smi will be the fake one, not {real}", file=sys.stderr)
    print(f'export PATH={shlex.quote(shim)}":$PATH"')
    directory = native_directory()
    if _nvml_mode() == "native" and directory is not None:
        rest = '"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"'
        print(f"export LD_LIBRARY_PATH={shlex.quote(directory)}{rest}")
        print(f"export FAKEHW_RUNTIME_DIR={shlex.quote(runtime_paths(create=True).root)}")
    return EXIT_OK
