"""``[HOST:]PORT`` as the daemon's TCP listener and its remote clients take it.

Part of the contract: the settings (``tcp_listen``), the protocol and the command line
all read addresses this one way. Light on purpose: the viewers import it.
"""

from __future__ import annotations

DEFAULT_TCP_HOST = "127.0.0.1"


def parse_tcp_address(text: str) -> tuple[str, int]:
    """``"[HOST:]PORT"`` (HOST may be ``[v6]``) as ``(host, port)``; HOST defaults to
    loopback, so a listener is never exposed to other hosts unless asked."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host = DEFAULT_TCP_HOST
    bracketed = host.startswith("[") or host.endswith("]")
    if bracketed:  # an IPv6 address, whole in its brackets: "[::1]"
        if not (host.startswith("[") and host.endswith("]")) or "]" in host[1:-1]:
            raise ValueError(f"expected [HOST:]PORT with an IPv6 HOST in brackets, got {text!r}")
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"an IPv6 HOST goes in brackets ([::1]:PORT), got {text!r}")
    host = host or DEFAULT_TCP_HOST
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected [HOST:]PORT with PORT 0-65535, got {text!r}")
    return host, int(port_text)
