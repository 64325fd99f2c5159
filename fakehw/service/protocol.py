"""The daemon's wire protocol: JSON lines over a Unix socket (docs/protocol.md).

One request per line, one response per request, in order; subscriptions add
pushed lines. Small on purpose: a client is a socket, ``json`` and this file.
No numpy here.
"""

from __future__ import annotations

import json

from fakehw import TYPE_CHECKING
from fakehw.contract.limits import MAX_ECC_COUNT as MAX_ECC_COUNT
from fakehw.contract.snapshot import CLEAR_FAULTS as CLEAR_FAULTS
from fakehw.contract.snapshot import FAULTS as FAULTS
from fakehw.contract.snapshot import GPU_FAULTS as GPU_FAULTS
from fakehw.contract.snapshot import RANK_CRASH as RANK_CRASH
from fakehw.contract.tcpaddress import DEFAULT_TCP_HOST as DEFAULT_TCP_HOST
from fakehw.contract.tcpaddress import parse_tcp_address as parse_tcp_address

CLOCK_DOMAINS = ("sm", "memory")  # what lock_clocks holds: the SM or the memory clock

if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20  # a request line longer than this is refused, and the connection closed
MAX_ID_DIGITS = 18  # a request id: an integer below 10**18 ...
MAX_ID_CHARS = 256  # ... or a string this long at most
MIN_SUBSCRIBE_INTERVAL_MS = 50
MAX_SUBSCRIBE_INTERVAL_MS = 3_600_000
MAX_SUBSCRIPTIONS = 16  # per connection

# Error codes a response may carry.
BAD_REQUEST = "bad_request"  # malformed JSON, missing or wrong-typed argument
UNKNOWN_OP = "unknown_op"
NOT_FOUND = "not_found"  # no such node, pid or subscription
CONFLICT = "conflict"  # e.g. a pid attached twice
PROTOCOL_MISMATCH = "protocol_mismatch"
TOO_LARGE = "too_large"  # a request line over the limit (then closed), or a reply too big
OUT_OF_MEMORY = "out_of_memory"  # a process asked for more GPU memory than is free
INTERNAL = "internal"
BUSY = "busy"  # the daemon serves as many connections as it will
UNAUTHORIZED = "unauthorized"  # a TCP client without the right token (then closed)
FORBIDDEN = "forbidden"  # an op TCP clients may not use: they only view

MAX_PID = 2**31 - 1
# A full snapshot costs ~1.4 KB of JSON per GPU: one of more GPUs than this is refused
# (too_large); the views of a larger cluster ask per node, or for the ``summary``.
MAX_SNAPSHOT_GPUS = 4096
# A reply longer than this is refused (too_large) instead of sent: a snapshot of
# 4,096 GPUs holding many processes each, say. Replies wait in the daemon for their
# reader: this bounds what one request can make it hold.
MAX_REPLY_BYTES = 12 << 20
MAX_DETACH_PIDS = 65536  # ``detach`` frees this many processes at once at most
MAX_HEALTH_WATCH_MASK = 0x1FFF  # DCGM's 13 health systems (dcgm_structs.h DCGM_HEALTH_WATCH_*)
MAX_STATUS_PROCESSES = 1024  # ``status`` lists this many processes (and counts them all)
# What ``inject`` may do to a GPU (docs/protocol.md): its faults, a crash of the
# processes on it, and ``clear``: the names the snapshot (the contract) defines,
# imported above.
MAX_UNAUTHENTICATED_LINE_BYTES = 4096  # a TCP client's first line (its hello)
AUTH_TIMEOUT_S = 5.0  # a TCP client must say hello with its token within this


class ProtocolError(Exception):
    """A request the daemon refuses; carries the code sent back to the client."""

    def __init__(self, code: str, message: str, request_id: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode_request(line: bytes, ops: tuple[str, ...]) -> dict[str, Any]:
    """Parse one request line for a server of ``ops`` (the daemon's: ``service.ops``);
    raise ``ProtocolError`` saying what is wrong."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(TOO_LARGE, f"request longer than {MAX_LINE_BYTES} bytes")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(BAD_REQUEST, f"not a JSON object: {exc}") from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise ProtocolError(BAD_REQUEST, "a number in the request is too long") from None
    except RecursionError:
        raise ProtocolError(BAD_REQUEST, "the request is nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError(BAD_REQUEST, "a request must be a JSON object")
    request_id = message.get("id")
    if request_id is not None and not _valid_id(request_id):
        raise ProtocolError(
            BAD_REQUEST,
            f'"id" must be an integer of at most {MAX_ID_DIGITS} digits or a string of at most '
            f"{MAX_ID_CHARS} characters",
        )
    op = message.get("op")
    if not isinstance(op, str):
        raise ProtocolError(BAD_REQUEST, 'a request needs an "op" string', request_id)
    if op not in ops:
        raise ProtocolError(UNKNOWN_OP, f"unknown op {op!r}; ops: {', '.join(ops)}", request_id)
    if b"\\u" in line and _holds_lone_surrogate(message):
        raise ProtocolError(
            BAD_REQUEST,
            "the request holds a lone surrogate (\\ud800-\\udfff): not text",
            request_id,
        )
    return message


def _holds_lone_surrogate(message: dict[str, Any]) -> bool:
    """JSON's ``\\uXXXX`` escapes can spell half of a UTF-16 pair, which is no character:
    such a string could not be written to a terminal, a log or a file later."""
    try:
        json.dumps(message, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def _valid_id(request_id: object) -> bool:
    if isinstance(request_id, str):
        return len(request_id) <= MAX_ID_CHARS
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        return bool(abs(request_id) < 10**MAX_ID_DIGITS)
    return False


def ok(request_id: object, result: Any) -> bytes:
    return encode({"id": request_id, "ok": True, "result": result})


def ok_raw(request_id: object, result_json: bytes) -> bytes:
    """A success response around an already-encoded result (cached snapshots)."""
    head = json.dumps(request_id).encode()
    return b'{"id":' + head + b',"ok":true,"result":' + result_json + b"}\n"


def error(request_id: object, code: str, message: str) -> bytes:
    return encode({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


def push_raw(subscription: int, snapshot_json: bytes) -> bytes:
    return (
        b'{"subscription":' + str(subscription).encode() + b',"snapshot":' + snapshot_json + b"}\n"
    )


# --- argument readers: each raises ProtocolError(BAD_REQUEST) with the reason ---


def arg_int(
    message: dict[str, Any], name: str, *, low: int | None = None, high: int | None = None
) -> int:
    value = message.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(BAD_REQUEST, f'"{name}" must be an integer')
    if (low is not None and value < low) or (high is not None and value > high):
        raise ProtocolError(BAD_REQUEST, f'"{name}" must be between {low} and {high}')
    return value


def arg_optional_int(
    message: dict[str, Any], name: str, *, low: int | None = None, high: int | None = None
) -> int | None:
    if message.get(name) is None:
        return None
    return arg_int(message, name, low=low, high=high)


def arg_str(message: dict[str, Any], name: str, *, max_length: int = 256) -> str:
    """A string argument: 1 to ``max_length`` printable characters (no control
    characters, which the views would write to the terminal as they are)."""
    value = message.get(name)
    if (
        not isinstance(value, str)
        or not value
        or len(value) > max_length
        or not value.isprintable()
    ):
        raise ProtocolError(
            BAD_REQUEST, f'"{name}" must be a string of 1-{max_length} printable characters'
        )
    return value


def arg_optional_str(message: dict[str, Any], name: str, *, max_length: int = 256) -> str | None:
    if message.get(name) is None:
        return None
    return arg_str(message, name, max_length=max_length)


def arg_choice(message: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = message.get(name)
    if not isinstance(value, str) or value not in choices:
        raise ProtocolError(BAD_REQUEST, f'"{name}" must be one of {", ".join(choices)}')
    return value


def arg_bool(message: dict[str, Any], name: str) -> bool:
    value = message.get(name)
    if not isinstance(value, bool):
        raise ProtocolError(BAD_REQUEST, f'"{name}" must be true or false')
    return value


def arg_optional_number(
    message: dict[str, Any], name: str, *, low: float, high: float
) -> float | None:
    value = message.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ProtocolError(BAD_REQUEST, f'"{name}" must be a number from {low:g} to {high:g}')
    return float(value)


def arg_int_list(message: dict[str, Any], name: str, *, max_items: int = 65536) -> list[int]:
    value = message.get(name)
    if (
        not isinstance(value, list)
        or not value
        or len(value) > max_items
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
    ):
        raise ProtocolError(BAD_REQUEST, f'"{name}" must be a non-empty list of integers')
    return list(value)
