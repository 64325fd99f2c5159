"""``fakehw exporter``: the fake cluster as NVIDIA's DCGM exporter shows it to Prometheus.

Every GPU, with the DCGM exporter's metric names, types, help texts and labels, the
fields a dcgm-exporter counters file chooses (``--collectors``; by default
``fakehw/dcgm/data/default-counters.csv``, its datacenter set with Hopper's profiling
fields; ``fakehw.dcgm``), and labels: ``gpu``, ``UUID``, ``pci_bus_id``,
``device`` (``nvidia0``...), ``modelName``, the host label and
``DCGM_FI_DRIVER_VERSION``. The host label was ``Hostname`` in dcgm-exporter
until May 2026 and is ``hostname`` since; ``--host-label`` picks it (default
``hostname``; ``both`` serves both, for dashboards of either age). The text is
written the way dcgm-exporter writes it (``# TYPE`` lines name the metric
itself, counters carry no ``_total`` suffix, integers print as integers).

What is served:

* ``/metrics?node=N`` (N as in the daemon protocol: a node index or a
  hostname): one node's GPUs, what one dcgm-exporter on that node serves.
* ``/metrics``: every node's GPUs, fetched node by node in pipelined batches
  (so no daemon reply is large), for clusters of up to ``MAX_SCRAPE_GPUS``
  GPUs; a larger cluster is answered 413 saying to scrape per node. Each
  node's figures are of one instant; different nodes may be a tick apart.
* ``GET`` and ``HEAD`` only (405 otherwise); gzip when the client accepts it,
  as Prometheus does. Scrapes of the same target less than ``CACHE_S`` apart
  share one answer.

The HTTP server is one selector loop that accepts, reads request heads and
writes answers without a thread per connection, and ``WORKER_THREADS``
threads that compute answers. Like Go's ``http.Server`` with timeouts: a
client has ``HEADER_TIMEOUT_S`` to send its request head (an idle or slow one
is then closed) and ``WRITE_TIMEOUT_S`` to take the answer; at most
``MAX_CONNECTIONS`` are open (a new one pushes out the oldest that has not
sent its request yet); one request per connection (``Connection: close``).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import queue
import re
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakehw.dcgm import counters as dcgm_counters
from fakehw.dcgm.fields import ANSWERS_WHEN_LOST, FIELDS
from fakehw.service.client import Client, DaemonUnavailable, RequestFailed

HOST_LABELS = ("hostname", "Hostname", "both")

# The largest cluster one /metrics scrape carries: 1,024 nodes x 8. Measured on a
# 2-core machine, idle cluster: 8,192 GPUs are 45 MB of text (6.9 MB gzipped) in
# 1.7 s; 16,384 are 90 MB in 3-5 s, 32,768 are 180 MB in 7-10 s (the default scrape
# timeout). Beyond it, /metrics is refused (413) and each node is scraped on its own.
MAX_SCRAPE_GPUS = 8192
FETCH_BATCH_NODES = 16  # snapshots asked for at once: ~13 KB each, so far below the
# daemon's 8 MiB per-connection outbox even with 64 processes on every GPU

HEADER_TIMEOUT_S = 5.0  # from connecting to the end of the request head
WRITE_TIMEOUT_S = 10.0  # to take the whole answer (Prometheus' default scrape timeout)
LINGER_S = 1.0  # after answering, how long input is drained so the client reads the answer
MAX_HEAD_BYTES = 64 << 10  # request line and headers
MAX_CONNECTIONS = 256
WORKER_THREADS = 4
CACHE_S = 1.0  # scrapes of one target this close share an answer
DAEMON_TIMEOUT_S = 5.0  # for each answer of the daemon (a node's snapshot takes ms)
SEND_CHUNK = 1 << 20

TEXT = "text/plain; charset=utf-8"
METRICS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


# ------------------------------------------------------------------ the listen address
@dataclass(frozen=True)
class ListenAddress:
    """Where to listen: a socket family and the address to bind."""

    family: socket.AddressFamily
    sockaddr: tuple[Any, ...]
    dual_stack: bool = False  # "[::]" also takes IPv4 connections, as Go's ":PORT" does


def parse_listen(text: str) -> ListenAddress:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT``, as Go's ``net.Listen`` reads
    dcgm-exporter's ``--address``: an empty host means every interface, IPv4
    and IPv6 (fakehw's default, 127.0.0.1:9400, is loopback only); a host name
    listens on one of its addresses, IPv4 first. ``ValueError`` says what is wrong."""
    examples = "examples: 127.0.0.1:9400, [::1]:9400, :9400 for every interface"
    if re.fullmatch(r"[0-9]+", text):
        raise ValueError(
            f"--listen {text!r} has no host: :{text} listens on every interface, "
            f"127.0.0.1:{text} on loopback only"
        )
    if text.count(":") > 1 and not text.startswith("["):
        raise ValueError(f"--listen {text!r}: an IPv6 address goes in brackets ([::1]:9400)")
    found = re.fullmatch(r"(?:\[(?P<v6>[^\[\]]*)\]|(?P<host>[^:\[\]]*)):(?P<port>[0-9]{1,5})", text)
    if found is None or int(found["port"]) > 65535:
        raise ValueError(f"--listen {text!r} is not HOST:PORT with PORT 0-65535 ({examples})")
    port = int(found["port"])
    if found["v6"] is not None:
        return _resolve(text, found["v6"], port, socket.AF_INET6, socket.AI_NUMERICHOST)
    if not found["host"]:
        if socket.has_ipv6:
            return ListenAddress(socket.AF_INET6, ("::", port), dual_stack=True)
        return ListenAddress(socket.AF_INET, ("0.0.0.0", port))
    return _resolve(text, found["host"], port, socket.AF_UNSPEC, 0)


def _resolve(text: str, host: str, port: int, family: int, flags: int) -> ListenAddress:
    try:
        found = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0,
                                   flags | socket.AI_PASSIVE)  # fmt: skip
    except (socket.gaierror, UnicodeError) as exc:
        what = "an IPv6 address" if family == socket.AF_INET6 else "a known host"
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"--listen {text!r}: {host!r} is not {what} ({reason})") from None
    found.sort(key=lambda entry: entry[0] != socket.AF_INET)  # IPv4 first, as Go does
    chosen = found[0]
    unspecified = chosen[4][0] in ("::", "0.0.0.0")
    return ListenAddress(chosen[0], chosen[4], dual_stack=chosen[0] == socket.AF_INET6
                         and unspecified)  # fmt: skip


def listening_socket(address: ListenAddress) -> socket.socket:
    """A non-blocking socket bound to ``address`` and listening. Every interface
    without IPv6 in the kernel is every IPv4 interface."""
    try:
        sock = socket.socket(address.family, socket.SOCK_STREAM)
    except OSError as exc:
        if not address.dual_stack or exc.errno != errno.EAFNOSUPPORT:
            raise
        return listening_socket(ListenAddress(socket.AF_INET, ("0.0.0.0", address.sockaddr[1])))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if address.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if address.dual_stack else 1)
        sock.bind(address.sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------- collecting
class ClusterTooLarge(Exception):
    """The cluster has more GPUs than one scrape carries; the message says what to do."""


class NodeNotFound(Exception):
    """The daemon has no such node; the message is the daemon's."""


def too_large_message(nodes: int, gpus_per_node: int, first_hostname: str) -> str:
    return (
        f"the cluster has {nodes * gpus_per_node:,} GPUs ({nodes:,} nodes x {gpus_per_node}), "
        f"more than one scrape carries ({MAX_SCRAPE_GPUS:,}): scrape each node on its own, "
        f"/metrics?node=N with N 0-{nodes - 1} or /metrics?node=HOSTNAME ({first_hostname} ...)"
    )


def node_key(text: str) -> int | str:
    """A node of a query string as the daemon protocol names it: an index or a hostname."""
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) else text


def _reachable(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return f"{f'[{host}]' if ':' in host else host}:{port}"


def advertised_address(listen: str) -> str:
    """HOST:PORT of an exporter that listens at ``listen`` (``ValueError`` if bad)."""
    address = parse_listen(listen)
    if int(address.sockaddr[1]) == 0:
        raise ValueError("--print-file-sd needs the port the exporter listens on, not 0")
    return _reachable(str(address.sockaddr[0]), int(address.sockaddr[1]))


NODE_PATH = re.compile(r"/nodes/([A-Za-z0-9._-]{1,253})/metrics")


def service_discovery(hostnames: list[str], address: str) -> list[dict[str, Any]]:
    """Prometheus' http_sd / file_sd targets: one per fake node, as a DaemonSet of
    dcgm-exporter gives one per node. Every target is this exporter (``address``) at
    the node's own path; its instance is the node's name with the exporter's port."""
    port = address.rpartition(":")[2]
    return [
        {"targets": [address],
         "labels": {"__metrics_path__": f"/nodes/{name}/metrics", "instance": f"{name}:{port}"}}
        for name in hostnames
    ]  # fmt: skip


class DaemonLink:
    """The exporter's connection to the daemon. A connection found lost is made again
    once per request, and a daemon that is gone is started again with the same
    cluster (not the config's default), so a restart between scrapes goes unnoticed;
    a daemon that does not answer within ``DAEMON_TIMEOUT_S`` (stopped, stuck) fails
    the scrape (503 saying why) instead of holding it."""

    def __init__(self, client_name: str = "fakehw-exporter") -> None:
        self.client_name = client_name
        self.generation = 0  # connections made: a scrape seeing it change starts again
        self._client: Client | None = None
        self._cluster: dict[str, Any] | None = None  # the cluster to start again

    @property
    def hello(self) -> dict[str, Any]:
        return self._connected().hello

    def snapshot(self, node: int | str) -> Any:
        return self._retried(lambda client: client.snapshot(node))

    def request_many(self, requests: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        replies: list[Any] = self._retried(lambda client: client.request_many(requests))
        return replies

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _connected(self) -> Client:
        if self._client is None:
            from fakehw.contract.config import ClusterConfig

            cluster = None if self._cluster is None else ClusterConfig.from_json(self._cluster)
            client = Client.connect(client_name=self.client_name, cluster=cluster)
            client.sock.settimeout(DAEMON_TIMEOUT_S)
            self._client, self._cluster = client, dict(client.hello["cluster"])
            self.generation += 1
        return self._client

    def _retried(self, call: Callable[[Client], Any]) -> Any:
        client = self._connected()  # not connecting is final: no second wait
        try:
            return call(client)
        except DaemonUnavailable:  # lost (a restart, a crash): once more, on a new connection
            self.close()
        return call(self._connected())


@dataclass
class _Cached:
    at: float
    bodies: dict[bool, bytes] = field(default_factory=dict)  # gzipped or not
    error: DaemonUnavailable | None = None


class DcgmCollector:
    """The DCGM exporter's metrics, from the daemon, as Prometheus text."""

    def __init__(self, host_label: str = "hostname",
                 counters: tuple[dcgm_counters.Counter, ...] | None = None) -> None:  # fmt: skip
        if host_label not in HOST_LABELS:
            raise ValueError(f"host label must be one of {', '.join(HOST_LABELS)}")
        self.host_label = host_label
        chosen = counters if counters is not None else dcgm_counters.load()
        self.metrics = tuple(c for c in chosen if c.kind != "label")
        self.label_fields = tuple(c.field for c in chosen if c.kind == "label")
        self.daemon = DaemonLink()
        self._lock = threading.Lock()  # one scrape at a time talks to the daemon
        self._cache: dict[int | str | None, _Cached] = {}

    def connect(self) -> dict[str, Any]:
        """Connect to the daemon (starting one if none runs); its hello."""
        with self._lock:
            return self.daemon.hello

    def hostnames(self) -> list[str]:
        """Every node's hostname, in order."""
        with self._lock:
            return list(self.daemon.hello["hostnames"])

    def scrape(self, node: int | str | None, compress: bool = False) -> bytes:
        """The text for one node, or the whole cluster (``None``). Answers, and a daemon's
        failure, less than ``CACHE_S`` old are shared. Raises ``ClusterTooLarge``,
        ``NodeNotFound``, ``DaemonUnavailable``."""
        with self._lock:
            now = time.monotonic()
            cached = self._cache.get(node)
            if cached is None or now - cached.at >= CACHE_S:
                self._cache = {k: c for k, c in self._cache.items() if now - c.at < CACHE_S}
                try:
                    rows = self._node_rows(node) if node is not None else self._all_rows()
                    cached = _Cached(now, {False: exposition(self.metrics, rows)})
                except DaemonUnavailable as exc:
                    cached = _Cached(now, error=exc)
                self._cache[node] = cached
            if cached.error is not None:
                raise cached.error
            if compress not in cached.bodies:
                cached.bodies[compress] = gzip.compress(cached.bodies[False], compresslevel=1)
            return cached.bodies[compress]

    def _node_rows(self, node: int | str) -> list[GpuRow]:
        try:
            snapshot = self.daemon.snapshot(node)
        except RequestFailed as exc:
            if exc.code == "not_found":
                raise NodeNotFound(exc.message) from None
            raise DaemonUnavailable(f"the daemon refused node {node!r}: {exc.message}") from None
        return [row for record in snapshot["nodes"] for row in self.rows(snapshot, record)]

    def _all_rows(self) -> list[GpuRow]:
        daemon = self.daemon
        for _attempt in (1, 2):  # start again if the daemon was restarted during the scrape
            hello = daemon.hello
            generation = daemon.generation
            nodes, per_node = int(hello["cluster"]["nodes"]), int(hello["cluster"]["gpus_per_node"])
            if nodes * per_node > MAX_SCRAPE_GPUS:
                raise ClusterTooLarge(too_large_message(nodes, per_node, hello["hostnames"][0]))
            rows: list[GpuRow] = []
            for first in range(0, nodes, FETCH_BATCH_NODES):
                batch = range(first, min(nodes, first + FETCH_BATCH_NODES))
                replies = daemon.request_many([("snapshot", {"node": n}) for n in batch])
                if daemon.generation != generation:
                    break
                for reply in replies:
                    if isinstance(reply, RequestFailed):
                        raise DaemonUnavailable(f"the daemon refused a node: {reply.message}")
                    rows += [row for record in reply["nodes"] for row in self.rows(reply, record)]
            else:
                return rows
        raise DaemonUnavailable("the daemon restarted twice during one scrape")

    def labels(self, snapshot: Any, node: Any, gpu: Any) -> dict[str, str]:
        labels = {
            "gpu": str(gpu["index"]),
            "UUID": gpu["uuid"],
            "pci_bus_id": gpu["bus_id"],
            "device": f"nvidia{gpu['index']}",
            "modelName": snapshot["models"][gpu["model"]]["name"],
        }
        if self.host_label in ("Hostname", "both"):
            labels["Hostname"] = node["hostname"]
        if self.host_label in ("hostname", "both"):
            labels["hostname"] = node["hostname"]
        if "DCGM_FI_DRIVER_VERSION" in self.label_fields:
            labels["DCGM_FI_DRIVER_VERSION"] = snapshot["driver_version"]
        return labels

    def rows(self, snapshot: Any, node: Any) -> list[GpuRow]:
        """Each GPU of a node: its label text and its values as written (``None``: not served)."""
        rows = []
        for gpu in node["gpus"]:
            labels = ",".join(
                f'{k}="{_escape(v)}"' for k, v in self.labels(snapshot, node, gpu).items()
            )
            lost = bool(gpu.get("lost"))
            values = [None if lost and c.field != ANSWERS_WHEN_LOST
                      else _number(FIELDS[c.field].read(gpu)) for c in self.metrics]  # fmt: skip
            rows.append(GpuRow(labels, values))
        return rows

    def close(self) -> None:
        """Close the daemon connection, unless a scrape is using it (the process is ending)."""
        if self._lock.acquire(blocking=False):
            try:
                self.daemon.close()
            finally:
                self._lock.release()


@dataclass(frozen=True)
class GpuRow:
    labels: str  # 'gpu="0",UUID="GPU-...",...'
    values: list[str | None]  # in the collector's metrics' order


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(metrics: tuple[dcgm_counters.Counter, ...], rows: list[GpuRow]) -> bytes:
    """The Prometheus text format as dcgm-exporter writes it: one family per field."""
    out: list[str] = []
    for k, counter in enumerate(metrics):
        name = counter.field
        out.append(f"# HELP {name} {counter.help}\n# TYPE {name} {counter.kind}\n")
        out += [f"{name}{{{row.labels}}} {row.values[k]}\n" for row in rows
                if row.values[k] is not None]  # fmt: skip
    return "".join(out).encode()


# ------------------------------------------------------------------------------ HTTP
class HttpError(Exception):
    """A request answered with an error status; the message is the body's line."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = (),
                 reason: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.reason = reason


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case


def parse_request_head(head: bytes) -> Request:
    """A request line and headers (the head, without the blank line); ``HttpError`` if bad."""
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha():
        raise HttpError(400, f"not an HTTP request line: {lines[0][:100]!r}")
    method, target, version = parts
    if not re.fullmatch(r"HTTP/1\.[0-9]", version):
        raise HttpError(505, f"{version[:20]!r} is not supported: speak HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HttpError(400, f"malformed header line: {line[:100]!r}")
        headers[name.lower()] = value.strip()
    try:
        url = urlsplit(target)
        query = parse_qs(url.query, keep_blank_values=True)
    except ValueError as exc:
        raise HttpError(400, f"not a request target: {target[:100]!r} ({exc})") from None
    return Request(method, url.path, query, headers)


def http_response(status: int, body: bytes, content_type: str = TEXT, *,
                  headers: tuple[tuple[str, str], ...] = (), reason: str | None = None,
                  head_only: bool = False) -> bytes:  # fmt: skip
    """A whole HTTP/1.1 answer, closing the connection after it."""
    lines = [
        f"HTTP/1.1 {status} {reason or HTTPStatus(status).phrase}",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


def accepts_gzip(request: Request) -> bool:
    for coding in request.headers.get("accept-encoding", "").split(","):
        name, _, params = coding.partition(";")
        if name.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class MetricsApp:
    """What each request is answered: ``/metrics[?node=N]``, a pointer at ``/``."""

    def __init__(self, collector: DcgmCollector,
                 warn: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.collector = collector
        self.address = "127.0.0.1:9400"  # what /sd names when a request has no Host header
        self.warn = warn or (lambda text: print(f"fakehw exporter: {text}", file=sys.stderr))
        self._started = False

    def start(self) -> None:
        """Connect to the daemon, as dcgm-exporter fails at start without DCGM, and say
        once if the cluster is too large for one scrape."""
        if self._started:
            return
        hello = self.collector.connect()
        nodes, per_node = int(hello["cluster"]["nodes"]), int(hello["cluster"]["gpus_per_node"])
        if nodes * per_node > MAX_SCRAPE_GPUS:
            self.warn(
                f"/metrics answers 413: {too_large_message(nodes, per_node, hello['hostnames'][0])}"
            )
        self._started = True

    def respond(self, head: bytes) -> bytes:
        """The whole answer to one request head."""
        head_only = head[:5] == b"HEAD "
        try:
            request = parse_request_head(head)
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405, f"{request.method[:20]} is not served: GET /metrics",
                                headers=(("Allow", "GET, HEAD"),))  # fmt: skip
            return self._route(request)
        except HttpError as exc:
            body = f"fakehw exporter: {exc.message}\n".encode()
            return http_response(exc.status, body, headers=exc.headers, reason=exc.reason,
                                 head_only=head_only)  # fmt: skip

    def _route(self, request: Request) -> bytes:
        head_only = request.method == "HEAD"
        per_node = NODE_PATH.fullmatch(request.path)
        if request.path == "/metrics" or per_node:
            compress = accepts_gzip(request)
            body = self._metrics(request, compress, per_node.group(1) if per_node else None)
            headers = (("Content-Encoding", "gzip"),) if compress else ()
            return http_response(200, body, METRICS_TEXT,
                                 headers=(*headers, ("Vary", "Accept-Encoding")),
                                 head_only=head_only)  # fmt: skip
        if request.path == "/sd":
            address = request.headers.get("host") or self.address
            try:
                targets = service_discovery(self.collector.hostnames(), address)
            except DaemonUnavailable as exc:
                raise HttpError(503, f"fakehw daemon unavailable: {exc}") from None
            body = (json.dumps(targets, indent=1) + "\n").encode()
            return http_response(200, body, "application/json", head_only=head_only)
        if request.path == "/":
            body = (b"fakehw DCGM-style exporter: metrics at /metrics, one node's at "
                    b"/nodes/HOSTNAME/metrics (or /metrics?node=N, an index or a hostname); "
                    b"Prometheus http_sd targets, one per node, at /sd\n")  # fmt: skip
            return http_response(200, body, head_only=head_only)
        raise HttpError(404, f"nothing at {request.path[:200]!r}: metrics are at /metrics")

    def _metrics(self, request: Request, compress: bool, path_node: str | None = None) -> bytes:
        wanted = request.query.get("node")
        if wanted is not None and (len(wanted) != 1 or not wanted[0]):
            raise HttpError(400, "one node per scrape: /metrics?node=N (an index or a hostname)")
        if path_node is not None:
            wanted = [path_node]
        node = None if wanted is None else node_key(wanted[0])
        try:
            return self.collector.scrape(node, compress)
        except ClusterTooLarge as exc:
            raise HttpError(413, str(exc), reason="Cluster Too Large For One Scrape") from None
        except NodeNotFound as exc:
            raise HttpError(404, str(exc)) from None
        except DaemonUnavailable as exc:
            raise HttpError(503, f"fakehw daemon unavailable: {exc}") from None


# ---------------------------------------------------------------------- the server
READING, WORKING, WRITING, LINGERING = "reading", "working", "writing", "lingering"
HEAD_END = re.compile(rb"\r?\n\r?\n")


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    deadline: float
    state: str = READING
    inbox: bytearray = field(default_factory=bytearray)
    outbox: memoryview = field(default_factory=lambda: memoryview(b""))


class ExporterServer:
    """The HTTP server: ``serve_forever`` until interrupted, then ``server_close``."""

    def __init__(self, address: ListenAddress, app: MetricsApp) -> None:
        self.app = app
        self.socket = listening_socket(address)
        self.server_address: tuple[Any, ...] = self.socket.getsockname()
        app.address = self.address
        self._selector = selectors.DefaultSelector()
        self._connections: dict[socket.socket, _Connection] = {}  # oldest first
        self._jobs: queue.SimpleQueue[tuple[_Connection, bytes] | None] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[tuple[_Connection, bytes]] = queue.SimpleQueue()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        self._wake_read.setblocking(False)
        self._workers: list[threading.Thread] = []
        self._accept_paused_until = 0.0
        self._stopping = False

    @property
    def address(self) -> str:
        """HOST:PORT a scraper reaches it at (this machine's name when on every interface)."""
        return _reachable(str(self.server_address[0]), int(self.server_address[1]))

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    # ---------------------------------------------------------------- running
    def serve_forever(self) -> None:
        """Serve until ``shutdown`` or a signal's exception (Ctrl-C, SIGTERM) in this thread."""
        self.app.start()
        for k in range(WORKER_THREADS - len(self._workers)):
            worker = threading.Thread(target=self._work, name=f"exporter-worker-{k}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        try:
            while not self._stopping:
                for key, _events in self._selector.select(self._timeout()):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_read:
                        self._drain_wakeups()
                    else:
                        self._on_ready(key.data)
                self._take_answers()
                self._expire(time.monotonic())
        finally:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self.socket)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._wake_read)

    def shutdown(self) -> None:
        """Make ``serve_forever`` return (from another thread)."""
        self._stopping = True
        self._wake()

    def server_close(self) -> None:
        self._stopping = True
        for _ in self._workers:
            self._jobs.put(None)
        for conn in list(self._connections.values()):
            self._close(conn)
        self.socket.close()
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()
        self.app.collector.close()

    def _timeout(self) -> float:
        now = time.monotonic()
        due = min((c.deadline for c in self._connections.values() if c.state != WORKING),
                  default=now + 1.0)  # fmt: skip
        if self._accept_paused_until:
            due = min(due, self._accept_paused_until)
        return max(0.0, min(due - now, 1.0))

    # ------------------------------------------------------------ connections
    def _accept(self) -> None:
        while True:
            try:
                sock, _peer = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors: serve what is open, accept again in 1 s
                self._selector.unregister(self.socket)
                self._accept_paused_until = time.monotonic() + 1.0
                return
            if len(self._connections) >= MAX_CONNECTIONS and not self._push_out_oldest_reader():
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic() + HEADER_TIMEOUT_S)
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, data=conn)

    def _push_out_oldest_reader(self) -> bool:
        for conn in self._connections.values():
            if conn.state in (READING, LINGERING):
                self._close(conn)
                return True
        return False

    def _on_ready(self, conn: _Connection) -> None:
        if conn.state == WRITING:
            self._send(conn)
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
        elif conn.state == READING:
            self._read_head(conn, data)
        # LINGERING: input after the answer is dropped

    def _read_head(self, conn: _Connection, data: bytes) -> None:
        scanned = max(0, len(conn.inbox) - 3)  # where the blank line may start: new data only
        conn.inbox += data
        if conn.inbox.startswith((b"\r", b"\n")):  # blank lines before a request are allowed
            del conn.inbox[: len(conn.inbox) - len(conn.inbox.lstrip(b"\r\n"))]
            scanned = 0
        end = HEAD_END.search(conn.inbox, scanned)
        if end is not None and end.start() <= MAX_HEAD_BYTES:
            conn.state = WORKING
            self._selector.unregister(conn.sock)
            self._jobs.put((conn, bytes(conn.inbox[: end.start()])))
            conn.inbox = bytearray()
        elif len(conn.inbox) > MAX_HEAD_BYTES:
            line_ended = b"\n" in conn.inbox[:MAX_HEAD_BYTES]
            status = 431 if line_ended else 414
            limit = f"{MAX_HEAD_BYTES // 1024} KiB"
            what = "headers" if line_ended else "request line"
            body = f"fakehw exporter: the {what} exceeds {limit}\n".encode()
            conn.inbox = bytearray()
            self._answer(conn, http_response(status, body))

    def _answer(self, conn: _Connection, response: bytes) -> None:
        conn.state = WRITING
        conn.outbox = memoryview(response)
        conn.deadline = time.monotonic() + WRITE_TIMEOUT_S
        if conn.sock in self._selector.get_map():
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, data=conn)
        else:
            self._selector.register(conn.sock, selectors.EVENT_WRITE, data=conn)
        self._send(conn)

    def _send(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbox[:SEND_CHUNK])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.outbox = conn.outbox[sent:]
        if not conn.outbox:
            # The answer is out: say so (FIN) and drop what the client still sends for a
            # moment, so that closing does not reset the connection before it reads.
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            conn.state = LINGERING
            conn.deadline = time.monotonic() + LINGER_S
            self._selector.modify(conn.sock, selectors.EVENT_READ, data=conn)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._connections.values()
                     if c.state != WORKING and c.deadline <= now]:  # fmt: skip
            self._close(conn)  # too slow to ask, or to take the answer, or done lingering
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self.socket, selectors.EVENT_READ)

    def _close(self, conn: _Connection) -> None:
        self._connections.pop(conn.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    # ----------------------------------------------------------------- workers
    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            conn, head = job
            try:
                response = self.app.respond(head)
            except Exception as exc:  # a bug: answer it, say it, keep serving
                print(f"fakehw exporter: internal error: {exc!r}", file=sys.stderr)
                response = http_response(500, f"fakehw exporter: internal error: {exc}\n".encode())
            self._answers.put((conn, response))
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            self._wake_write.send(b"\0")

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_read.recv(4096):
                pass

    def _take_answers(self) -> None:
        while True:
            try:
                conn, response = self._answers.get_nowait()
            except queue.Empty:
                return
            if conn.sock in self._connections:
                self._answer(conn, response)


def serve(listen: str, host_label: str,
          counters: tuple[dcgm_counters.Counter, ...] | None = None) -> ExporterServer:  # fmt: skip
    """The exporter's HTTP server, listening, not yet serving (``ValueError``: a bad
    ``listen``; ``OSError``: it cannot listen there)."""
    address = parse_listen(listen)
    return ExporterServer(address, MetricsApp(DcgmCollector(host_label, counters)))
