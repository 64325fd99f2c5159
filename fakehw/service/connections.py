"""A client's connection to the daemon, as the event loop keeps it."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

MAX_CONNECTIONS = 1000  # beyond this, new connections are told so and closed ...
# ... except a few more kept for `fakehw daemon status` and `stop`: they may only
# ask those (a daemon crowded by idle clients can still be looked at and stopped).
RESERVED_CONNECTIONS = 16
MAX_TCP_CONNECTIONS = 256  # a separate budget: TCP strangers never crowd out local tools


@dataclass
class Subscription:
    """Snapshots pushed to a connection every ``interval_s``."""

    ident: int
    interval_s: float
    nodes: list[int] | None
    detail: bool
    next_due: float


@dataclass
class Connection:
    sock: socket.socket
    pid: int | None
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    subscriptions: dict[int, Subscription] = field(default_factory=dict)
    client_name: str = ""
    closing: bool = False
    remote: str | None = None  # "host:port" of a TCP peer; None on the Unix socket
    authenticated: bool = True  # a TCP peer becomes so by its hello's token
    opened: float = 0.0
    last_progress: float = 0.0  # when it last sent a whole request or took some reply
    # A peer in another PID namespace (a container sharing the runtime directory): the
    # PIDs it names are not this machine's, so it may not attach them.
    foreign_pids: bool = False
    reserved: bool = False  # let in beyond the connection limit: ops ``when_busy`` only
