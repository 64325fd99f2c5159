"""Where a user's daemon lives: its runtime directory, socket, pid and lock files.

``FAKEHW_RUNTIME_DIR`` overrides the location (tests and isolated clusters use
it); otherwise ``$XDG_RUNTIME_DIR/fakehw``, else ``/tmp/fakehw-$UID``. The
directory is created mode 0700 and must belong to the current user: a
directory or socket owned by someone else is refused, never used.

On every viewer's start-up path, so it uses ``os.path`` strings rather than
pathlib (a one-shot ``fake-nvidia-smi`` must start in a few milliseconds).
"""

from __future__ import annotations

import os
import stat


class RuntimeDirError(RuntimeError):
    """The runtime directory is unusable (wrong owner, wrong mode, not a dir)."""


class RuntimePaths:
    """The files of one runtime directory (all plain path strings)."""

    __slots__ = (
        "lock_file", "log_file", "pid_file", "root", "socket", "start_lock_file", "state_file",
        "tcp_token_file",
    )  # fmt: skip

    def __init__(self, root: str) -> None:
        self.root = root
        self.socket = os.path.join(root, "daemon.sock")
        self.pid_file = os.path.join(root, "daemon.pid")
        # Held by the running daemon for its whole life.
        self.lock_file = os.path.join(root, "daemon.lock")
        # Held by a client while it starts a daemon, so only one is started.
        self.start_lock_file = os.path.join(root, "start.lock")
        self.log_file = os.path.join(root, "daemon.log")
        # The GPUs' counters, heat, errors and faults, saved so a restart carries on.
        self.state_file = os.path.join(root, "state.npz")
        # What a TCP client must present (only when the daemon listens on TCP).
        self.tcp_token_file = os.path.join(root, "tcp.token")

    def __repr__(self) -> str:
        return f"RuntimePaths({self.root!r})"


def default_root() -> str:
    explicit = os.environ.get("FAKEHW_RUNTIME_DIR")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "fakehw")
    return f"/tmp/fakehw-{os.getuid()}"


def runtime_paths(root: str | os.PathLike[str] | None = None, create: bool = False) -> RuntimePaths:
    """The runtime paths, checked for ownership; ``create`` makes the directory."""
    directory = os.fspath(root) if root is not None else default_root()
    if create:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RuntimeDirError(
                f"cannot create runtime directory {directory}: {exc.strerror}"
            ) from exc
    if os.path.lexists(directory):
        check_private_dir(directory)
    return RuntimePaths(directory)


def check_private_dir(root: str) -> None:
    info = os.lstat(root)
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"runtime path {root} is not a directory")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(
            f"runtime directory {root} belongs to uid {info.st_uid}, not to you "
            f"(uid {os.getuid()}); set FAKEHW_RUNTIME_DIR to a directory of your own"
        )
    if info.st_mode & 0o077:
        os.chmod(root, 0o700)


def check_socket_owner(path: str) -> None:
    """Refuse to talk to a socket that another user could have planted."""
    info = os.lstat(path)
    if not stat.S_ISSOCK(info.st_mode):
        raise RuntimeDirError(f"{path} exists but is not a socket")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(
            f"socket {path} belongs to uid {info.st_uid}, not to you; refusing to use it"
        )
