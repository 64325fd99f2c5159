"""Where a user's daemon lives: its runtime directory, socket, pid and lock files.

``FAKEHW_RUNTIME_DIR`` (an absolute path) overrides the location (tests and
isolated clusters use it); otherwise ``$XDG_RUNTIME_DIR/fakehw``, else
``/tmp/fakehw-$UID``. The directory is created mode 0700; one that exists must
belong to the current user and be writable by no one else (it is refused, not
re-moded). Its files are created 0600 and never opened through a symlink.

On every viewer's start-up path, so it uses ``os.path`` strings rather than
pathlib (a one-shot ``fake-nvidia-smi`` must start in a few milliseconds).
"""

from __future__ import annotations

import errno
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


# sockaddr_un's sun_path holds 108 bytes with the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
MIN_TOKEN_CHARS = 16


def default_root() -> str:
    explicit = os.environ.get("FAKEHW_RUNTIME_DIR")
    if explicit:
        if not os.path.isabs(explicit):
            raise RuntimeDirError(
                f"FAKEHW_RUNTIME_DIR must be an absolute path, not {explicit!r} (a relative one "
                "would mean another daemon in every working directory)"
            )
        return physical_path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        return os.path.join(xdg, "fakehw")
    return f"/tmp/fakehw-{os.getuid()}"


def physical_path(path: str) -> str:
    """``path`` with its parent directories resolved as the kernel resolves them (a
    ``..`` after a symlink leads to the parent of the link's target, not back where a
    textual clean-up would go), its last component kept as it is (checked, not followed)."""
    parent, name = os.path.split(path.rstrip("/") or "/")
    if name in ("", ".", ".."):
        return os.path.realpath(path)
    return os.path.join(os.path.realpath(parent), name)


def runtime_paths(root: str | os.PathLike[str] | None = None, create: bool = False) -> RuntimePaths:
    """The runtime paths, checked for ownership; ``create`` makes the directory
    (mode 0700). A directory that exists is used as it is, never re-moded."""
    if root is None:
        directory = default_root()
    else:  # joined to the working directory unless absolute
        directory = physical_path(os.path.join(os.getcwd(), os.fspath(root)))
    paths = RuntimePaths(directory)
    check_socket_path(paths.socket)
    if create:
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise RuntimeDirError(
                f"cannot create runtime directory {directory}: {exc.strerror}"
            ) from exc
    if os.path.lexists(directory):
        check_private_dir(directory)
    return paths


def check_socket_path(path: str) -> None:
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise RuntimeDirError(
            f"the socket path {path} is {size} bytes, more than the {MAX_SOCKET_PATH_BYTES} a "
            "Unix socket allows: set FAKEHW_RUNTIME_DIR to a shorter directory"
        )


def check_private_dir(root: str) -> None:
    """The directory must be the user's and writable by nobody else (others could plant
    or swap the socket, the pid file or a log symlink). It is never chmodded here: fakehw
    does not change the mode of a directory it did not create."""
    info = os.lstat(root)
    if stat.S_ISLNK(info.st_mode):
        raise RuntimeDirError(
            f"runtime path {root} is a symbolic link: fakehw does not follow one there "
            f"(use the directory it points to, {os.path.realpath(root)})"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise RuntimeDirError(f"runtime path {root} is not a directory")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(
            f"runtime directory {root} belongs to uid {info.st_uid}, not to you "
            f"(uid {os.getuid()}); set FAKEHW_RUNTIME_DIR to a directory of your own"
        )
    if info.st_mode & 0o022:
        raise RuntimeDirError(
            f"runtime directory {root} is writable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): fakehw keeps its socket and state only in a "
            "directory no one else can write; set FAKEHW_RUNTIME_DIR to a new path (it is "
            "created private) or to a directory of mode 0700"
        )


def open_private(path: str, flags: int) -> int:
    """Open (creating, mode 0600) a file of the runtime directory; never through a symlink.
    A file of ours left readable by an older fakehw is made private again."""
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def check_socket_owner(path: str) -> None:
    """Refuse to talk to a socket that another user could have planted."""
    info = os.lstat(path)
    if not stat.S_ISSOCK(info.st_mode):
        raise RuntimeDirError(f"{path} exists but is not a socket")
    if info.st_uid != os.getuid():
        raise RuntimeDirError(
            f"socket {path} belongs to uid {info.st_uid}, not to you; refusing to use it"
        )


class TokenError(RuntimeError):
    """A TCP token file that cannot be used; the message says why."""


def read_token_file(path: str) -> str:
    """The token in ``path``: its first line. The file must be a regular file of the
    user's own, private (0600) as an ssh key is, opened without following a symlink;
    the daemon and the clients apply the same rules."""
    if not path:
        raise TokenError("the token file name is empty")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise TokenError(f"token file {path} does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TokenError(f"token file {path} is a symbolic link; refusing it") from None
        raise TokenError(f"cannot read token file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TokenError(f"token file {path} is not a regular file")
        if info.st_uid != os.getuid():
            raise TokenError(f"token file {path} belongs to uid {info.st_uid}, not to you")
        if info.st_mode & 0o077:
            raise TokenError(f"token file {path} is readable by others: chmod 600 {path}")
        raw = os.read(fd, 4096)
    except OSError as exc:
        raise TokenError(f"cannot read token file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        token = raw.split(b"\n", 1)[0].strip().decode("ascii")
    except UnicodeDecodeError:
        raise TokenError(f"token file {path} does not hold a text token") from None
    if len(token) < MIN_TOKEN_CHARS or not token.isprintable():
        raise TokenError(
            f"token file {path}: the token must be at least {MIN_TOKEN_CHARS} printable characters"
        )
    return token


def create_token_file(path: str) -> None:
    """Write a fresh random token (32 random bytes, URL-safe text) to a new file, 0600."""
    import secrets

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
