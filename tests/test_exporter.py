"""`fakehw exporter` against what a demanding user, a scraper at scale and a hostile client do:
addresses as dcgm-exporter takes them, idle and oversized connections, per-node scrapes,
clusters larger than one scrape, methods other than GET, a daemon restarted underneath."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import re
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest
from helpers import Node, fakehw, wait_for
from prometheus_client.parser import text_string_to_metric_families

TEMP_LINE = re.compile(r'^DCGM_FI_DEV_GPU_TEMP\{.*hostname="([^"]+)".*\} \d+$', re.MULTILINE)


@dataclass
class Answer:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Exporter:
    process: subprocess.Popen[str]
    port: int

    def get(self, path: str = "/metrics", method: str = "GET", host: str = "127.0.0.1",
            headers: dict[str, str] | None = None) -> Answer:  # fmt: skip
        connection = http.client.HTTPConnection(host, self.port, timeout=60)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, response.reason, response.headers, response.read())
        finally:
            connection.close()

    def stderr_line(self, timeout: float = 20) -> str:
        assert self.process.stderr is not None
        ready, _, _ = select.select([self.process.stderr], [], [], timeout)
        return self.process.stderr.readline() if ready else ""


@contextlib.contextmanager
def exporter(node: Node, listen: str = "127.0.0.1:0", *more: str) -> Iterator[Exporter]:
    """``fakehw exporter`` running on the node's daemon, as a user starts it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fakehw", "exporter", "--listen", listen, *more],
        env=node.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # "fakehw exporter: http://HOST:PORT/metrics"
        found = re.search(r":(\d+)/metrics$", first.strip())
        assert found, (first, process.stderr.read() if process.poll() is not None else "")
        yield Exporter(process, int(found.group(1)))
    finally:
        process.terminate()
        process.wait(timeout=30)


def hostnames(text: str) -> list[str]:
    """The host label of every GPU temperature sample, in order."""
    return TEMP_LINE.findall(text)


@pytest.fixture(scope="module")
def small() -> Iterator[Node]:
    node = Node("h100", 2, nodes=3)
    yield node
    node.close()


# ------------------------------------------------------------------ addresses
@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")
def test_listen_takes_ipv6_and_go_style_all_interfaces(small: Node) -> None:
    with exporter(small, "[::1]:0") as served:
        answer = served.get(host="::1")
        assert answer.status == 200 and len(hostnames(answer.text)) == 6
    with exporter(small, ":0") as served:  # as Go's net.Listen: every interface, both families
        for host in ("127.0.0.1", "::1"):
            answer = served.get(host=host)
            assert answer.status == 200 and len(hostnames(answer.text)) == 6, host


@pytest.mark.parametrize(
    ("listen", "said"),
    [
        ("9400", ":9400 listens on every interface"),
        ("::1:9400", "in brackets"),
        ("[fe80::zz]:9400", "is not an IPv6 address"),
        ("127.0.0.1:٩٤٠٠", "PORT 0-65535"),  # Arabic-Indic digits are not a port
    ],
)
def test_bad_listen_values_are_one_line_usage_errors(listen: str, said: str) -> None:
    result = fakehw("exporter", "--listen", listen, timeout=20)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- connections
def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_idle_and_slow_clients_cost_no_thread_and_are_dropped(small: Node) -> None:
    with exporter(small) as served:
        clients = [socket.create_connection(("127.0.0.1", served.port)) for _ in range(300)]
        try:
            for sock in clients[::3]:  # a slow client: a request that never ends
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            answer = served.get()  # a scrape still works while they sit there
            assert answer.status == 200 and len(hostnames(answer.text)) == 6
            assert psutil.Process(served.process.pid).num_threads() <= 10
            wait_for(lambda: all(closed_by_peer(sock) for sock in clients), timeout=20)
        finally:
            for sock in clients:
                sock.close()


def raw_request(port: int, request: bytes) -> bytes:
    """Send bytes as they are, return the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        return sock.makefile("rb").readline()


def test_oversized_request_heads_are_refused_with_a_status(small: Node) -> None:
    with exporter(small) as served:
        line = b"GET /metrics?" + b"x" * 100_000 + b" HTTP/1.1\r\n\r\n"
        assert raw_request(served.port, line).split()[1] == b"414"  # as before
        headers = b"".join(b"X-Pad-%d: %s\r\n" % (k, b"y" * 60_000) for k in range(20))
        request = b"GET /metrics HTTP/1.1\r\n" + headers + b"\r\n"
        assert raw_request(served.port, request).split()[1] == b"431"
        assert served.get().status == 200


def test_other_methods_are_405_and_head_answers_headers_only(small: Node) -> None:
    with exporter(small) as served:
        posted = served.get(method="POST")
        assert posted.status == 405 and posted.headers["Allow"] == "GET, HEAD"
        assert "GET /metrics" in posted.text
        head = served.get(method="HEAD")
        assert head.status == 200 and head.body == b""
        assert int(head.headers["Content-Length"]) > 10_000


def test_gzip_is_served_to_a_scraper_that_accepts_it(small: Node) -> None:
    with exporter(small) as served:
        answer = served.get(headers={"Accept-Encoding": "gzip"})
        assert answer.status == 200 and answer.headers["Content-Encoding"] == "gzip"
        assert len(hostnames(gzip.decompress(answer.body).decode())) == 6


# ---------------------------------------------------------------------- nodes
def test_one_node_is_scraped_on_its_own_by_index_or_hostname(small: Node) -> None:
    with exporter(small) as served:
        every = hostnames(served.get().text)
        names = list(dict.fromkeys(every))
        assert len(every) == 6 and len(names) == 3
        assert hostnames(served.get("/metrics?node=1").text) == [names[1]] * 2
        assert hostnames(served.get(f"/metrics?node={names[2]}").text) == [names[2]] * 2
        for unknown in ("9", "no-such-host"):
            missing = served.get(f"/metrics?node={unknown}")
            assert missing.status == 404 and f"no node {unknown}" in missing.text.replace("'", "")
        assert served.get("/metrics?node=").status == 400


def test_a_cluster_larger_than_one_daemon_reply_is_scraped_whole() -> None:
    node = Node("h100", 8, nodes=1024)  # 8,192 GPUs: one snapshot would exceed 8 MiB
    try:
        with exporter(node) as served:
            answer = served.get()
            assert answer.status == 200, answer.text[:300]
            every = hostnames(answer.text)
            assert len(every) == 8192 and len(set(every)) == 1024
    finally:
        node.close()


def test_a_cluster_too_large_for_one_scrape_is_refused_with_the_way_out() -> None:
    node = Node("h100", 8, nodes=1025)  # 8,200 GPUs, beyond what one scrape carries
    try:
        with exporter(node) as served:
            warning = served.stderr_line()
            assert "8,200 GPUs" in warning and "?node=" in warning, warning
            refused = served.get()
            assert refused.status == 413 and refused.reason == "Cluster Too Large For One Scrape"
            assert "/metrics?node=N with N 0-1024" in refused.text
            last = served.get("/metrics?node=1024")
            assert last.status == 200 and len(hostnames(last.text)) == 8
    finally:
        node.close()


# --------------------------------------------------------------------- daemon
def test_the_exporter_rides_out_a_stopped_and_a_restarted_daemon() -> None:
    node = Node("h100", 2, nodes=3)
    try:
        with exporter(node) as served:
            before = served.get().text
            assert fakehw("daemon", "stop", env=node.env).returncode == 0
            after = served.get()  # the same cluster comes back, not the config's default
            assert after.status == 200 and hostnames(after.text) == hostnames(before)
            assert re.findall(r'UUID="([^"]+)"', after.text) == re.findall(
                r'UUID="([^"]+)"', before
            )
            assert fakehw("daemon", "stop", env=node.env).returncode == 0
            started = fakehw("daemon", "start", "--gpu-model", "h100", "--nodes", "2",
                             "--gpus-per-node", "2", env=node.env)  # fmt: skip
            assert started.returncode == 0, started.stderr
            wait_for(lambda: len(hostnames(served.get().text)) == 4, timeout=10)
    finally:
        node.close()


def samples_by_gpu(text: str) -> dict[str, dict[str, float]]:
    """{metric: {gpu index: value}} of a scrape."""
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[sample.labels["gpu"]] = sample.value
    return out


def test_the_profiling_fields_follow_what_each_gpu_does() -> None:
    """dcgm-exporter's DCP fields on Hopper, by phase: a bf16 training step keeps the
    tensor pipes busy and every SM active; a memory-bound pass saturates DRAM without
    tensor work; a rank spinning in a barrier keeps SMs active, no tensor, no DRAM;
    an idle GPU shows nothing."""
    node = Node("h100", 4)
    try:
        for gpu, phase in ((0, "train"), (1, "membound"), (2, "spin")):
            node.run_process("python3", gpu, 30000, phase=phase)
        node.wait_busy_gpus([0])
        with exporter(node) as served:
            text = served.get("/metrics?node=0").text
        values = samples_by_gpu(text)
    finally:
        node.close()
    tensor = values["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"]
    sm = values["DCGM_FI_PROF_SM_ACTIVE"]
    dram = values["DCGM_FI_PROF_DRAM_ACTIVE"]
    occupancy = values["DCGM_FI_PROF_SM_OCCUPANCY"]
    assert tensor["0"] >= 0.3 and sm["0"] >= 0.9 and 0.3 <= dram["0"] <= 0.8  # training
    assert dram["1"] >= 0.95 and tensor["1"] == 0 and occupancy["1"] > occupancy["0"]  # membound
    assert 0 < sm["2"] < 0.5 and tensor["2"] == 0 and dram["2"] == 0  # spin
    assert values["DCGM_FI_DEV_GPU_UTIL"]["2"] == 100  # busy all the same, as nvidia-smi shows
    for name in ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE",
                 "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE",
                 "DCGM_FI_PROF_PIPE_FP64_ACTIVE", "DCGM_FI_PROF_PIPE_FP32_ACTIVE",
                 "DCGM_FI_PROF_PIPE_FP16_ACTIVE", "DCGM_FI_PROF_NVLINK_TX_BYTES"):  # fmt: skip
        assert values[name]["3"] == 0, name  # idle
    assert values["DCGM_FI_PROF_PIPE_FP64_ACTIVE"]["0"] == 0  # bf16 training: no FP64
    assert "# TYPE DCGM_FI_PROF_PCIE_TX_BYTES gauge" in text  # a rate, as dcgm-exporter types it


def test_collectors_choose_the_fields_in_dcgm_exporters_format(small: Node, tmp_path) -> None:  # type: ignore[no-untyped-def]
    chosen = tmp_path / "counters.csv"
    chosen.write_text("# mine\nDCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C).\n\n"
                      "DCGM_FI_DEV_POWER_USAGE,gauge,Power draw (in W).\n")  # fmt: skip
    with exporter(small, "127.0.0.1:0", "--collectors", str(chosen)) as served:
        text = served.get("/metrics?node=0").text
    assert set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE)) == {
        "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"}  # fmt: skip
    assert "DCGM_FI_DRIVER_VERSION" not in text  # not asked for as a label
    for body, said in (
        ("DCGM_FI_DEV_NO_SUCH, gauge, x\n", "DCGM_FI_DEV_NO_SUCH is not a field fakehw answers"),
        ("DCGM_FI_DEV_GPU_TEMP, histogram, x\n", "type 'histogram' of DCGM_FI_DEV_GPU_TEMP"),
        ("DCGM_FI_DEV_GPU_TEMP gauge\n", "expected 'DCGM FIELD, type, help'"),
        ("# nothing\n", "no metric to serve"),
    ):
        chosen.write_text(body)
        refused = fakehw("exporter", "--listen", "127.0.0.1:0", "--collectors", str(chosen),
                         env=small.env)  # fmt: skip
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert said in refused.stderr and f"{chosen}:" in refused.stderr
