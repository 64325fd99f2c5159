"""Where a user's daemon lives: its runtime directory, socket, pid and lock files.

``FAKEHW_RUNTIME_DIR`` overrides the location (tests and isolated clusters use
it); otherwise ``$XDG_RUNTIME_DIR/fakehw``, else ``/tmp/fakehw-$UID``. The
directory is created mode 0700 and must belong to the current user: a
directory or socket owned by someone else is refused, never used.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path


class RuntimeDirError(RuntimeError):
    """The runtime directory is unusable (wrong owner, wrong mode, not a dir)."""


@dataclass(frozen=True)
class RuntimePaths:
    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "daemon.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "daemon.pid"

    @property
    def lock_file(self) -> Path:
        """Held by the running daemon for its whole life."""
        return self.root / "daemon.lock"

    @property
    def start_lock_file(self) -> Path:
        """Held by a client while it starts a daemon, so only one is started."""
        return self.root / "start.lock"

    @property
    def log_file(self) -> Path:
        return self.root / "daemon.log"


def default_root() -> Path:
    explicit = os.environ.get("FAKEHW_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / "fakehw"
    return Path(f"/tmp/fakehw-{os.getuid()}")


def runtime_paths(root: Path | None = None, create: bool = False) -> RuntimePaths:
    """The runtime paths, checked for ownership; ``create`` makes the directory."""
    root = root or default_root()
    if create:
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeDirError(
                f"cannot create runtime directory {root}: {exc.strerror}"
            ) from exc
    if root.exists():
        check_private_dir(root)
    return RuntimePaths(root)


def check_private_dir(root: Path) -> None:
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"runtime path {root} is not a directory")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(
            f"runtime directory {root} belongs to uid {info.st_uid}, not to you "
            f"(uid {os.getuid()}); set FAKEHW_RUNTIME_DIR to a directory of your own"
        )
    if info.st_mode & 0o077:
        os.chmod(root, 0o700)


def check_socket_owner(path: Path) -> None:
    """Refuse to talk to a socket that another user could have planted."""
    info = path.lstat()
    if not stat.S_ISSOCK(info.st_mode):
        raise RuntimeDirError(f"{path} exists but is not a socket")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(
            f"socket {path} belongs to uid {info.st_uid}, not to you; refusing to use it"
        )
