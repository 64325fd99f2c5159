"""Who may talk to the daemon: a Unix-socket peer of the daemon's own uid (and, if it
lives in another PID namespace, without the right to attach PIDs), or a TCP peer
that presents the token in its first request."""

from __future__ import annotations

import hmac
import logging
import os
import socket
import struct
from typing import Any

from fakehw.service import pidwatch
from fakehw.service import protocol as proto
from fakehw.service.connections import Connection
from fakehw.service.runtime import TokenError, create_token_file, read_token_file

log = logging.getLogger(__name__)


def load_or_create_token(path: str, create: bool) -> bytes:
    """The token TCP clients must present (``runtime.read_token_file``'s rules);
    ``create`` writes a fresh random one when there is none."""
    if create and not os.path.lexists(path):
        try:
            create_token_file(path)
        except FileExistsError:
            pass  # made meanwhile: read it as any other
        except OSError as exc:
            raise TokenError(f"cannot create token file {path}: {exc.strerror}") from None
    return read_token_file(path).encode()


def peer_credentials(sock: socket.socket) -> tuple[int | None, int | None]:
    """PID and UID of the process at the other end (Linux SO_PEERCRED)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None, None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None, None
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


def in_another_pid_namespace(peer_pid: int | None, own_namespace: object) -> bool:
    """Whether the peer sees other PIDs than this daemon does. The kernel gives a
    peer's PID as this daemon sees it (0 if it has none here)."""
    if peer_pid is None:
        return False  # no SO_PEERCRED: no namespaces either
    if peer_pid == 0:
        return True
    theirs = pidwatch.pid_namespace(peer_pid)
    return theirs is not None and theirs != own_namespace


def authenticate(conn: Connection, op: str, message: dict[str, Any], token: bytes) -> None:
    """A TCP peer's first request must be ``hello`` with the right ``token``."""
    if conn.authenticated:
        return
    offered = message.get("token")
    if op != "hello" or not isinstance(offered, str):
        raise proto.ProtocolError(
            proto.UNAUTHORIZED, 'over TCP the first request must be "hello" with "token"'
        )
    if not hmac.compare_digest(offered.encode(errors="replace"), token):
        raise proto.ProtocolError(proto.UNAUTHORIZED, "wrong token")
    conn.authenticated = True
    log.info("TCP peer %s authenticated", conn.remote)
