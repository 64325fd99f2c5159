"""A real Prometheus (Debian's package, on loopback, its own data directory) scraping
the exporter's per-node targets, found through its http_sd endpoint, while fake-train
runs on every node; PromQL over Prometheus' HTTP API checks what a dashboard would show."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PROGRAMS, Node, fakehw, wait_for
from test_exporter import exporter

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None and os.environ.get("FAKEHW_EXPECT_PROMETHEUS") != "1",
    reason="no prometheus on this machine (.ci/run installs Debian's package)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Prometheus:
    def __init__(self, port: int) -> None:
        self.port = port

    def query(self, promql: str) -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=10) as answer:
            reply = json.load(answer)
        assert reply["status"] == "success", reply
        result: list[dict[str, object]] = reply["data"]["result"]
        return result

    def value(self, promql: str) -> float:
        result = self.query(promql)
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])  # type: ignore[index]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Prometheus]]:
    """3 nodes x 2 GPUs, GPUs training on two nodes, the exporter, and Prometheus
    discovering the nodes through the exporter's /sd, scraping every second."""
    assert PROMETHEUS is not None, "FAKEHW_EXPECT_PROMETHEUS=1 but no prometheus on PATH"
    node = Node("h100", 2, nodes=3)
    work = tmp_path_factory.mktemp("prometheus")
    log = work / "train.log"
    with log.open("w") as out:  # fake-train on the cluster as it is: 3 nodes of 2 GPUs
        train = subprocess.Popen([*PROGRAMS["fake-train"], "--seed", "3"], env=node.env,
                                 stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    wait_for(lambda: "│ loss" in log.read_text(), timeout=120, interval=0.5)
    with exporter(node) as served:
        config = work / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: dcgm\n    http_sd_configs:\n"
            f"      - url: http://127.0.0.1:{served.port}/sd\n        refresh_interval: 5s\n"
        )
        port = free_port()
        process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("w"),
        )  # fmt: skip
        try:
            prometheus = Prometheus(port)

            def all_up() -> bool:
                try:
                    return len(prometheus.query("up == 1")) == 3
                except OSError:
                    return False

            wait_for(all_up, timeout=60, interval=0.5)
            yield node, prometheus
        finally:
            process.terminate()
            process.wait(timeout=30)
            train.terminate()
            train.wait(timeout=60)
            node.close()


def smi_power(node: Node, index: int) -> float:
    env = {**node.env, "FAKEHW_NODE": str(index)}
    out = subprocess.run(
        [sys.executable, "-m", "fakehw.smi", "--query-gpu=power.draw",
         "--format=csv,noheader,nounits"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sum(float(line) for line in out.split())


def test_every_node_is_its_own_target_with_its_hostname(stack: tuple[Node, Prometheus]) -> None:
    _, prometheus = stack
    up = prometheus.query("up")
    instances = sorted(str(r["metric"]["instance"]) for r in up)  # type: ignore[index]
    hostnames = sorted({str(r["metric"]["hostname"])  # type: ignore[index]
                        for r in prometheus.query("DCGM_FI_DEV_GPU_TEMP")})  # fmt: skip
    assert len(instances) == 3 and all(i.split(":")[0] in hostnames for i in instances)
    assert len(prometheus.query("DCGM_FI_DEV_GPU_TEMP")) == 6  # 2 GPUs on each node


def test_promql_power_agrees_with_nvidia_smi_and_the_energy_counter(
    stack: tuple[Node, Prometheus],
) -> None:
    node, prometheus = stack
    time.sleep(32)  # 30 s of samples for the rate
    total = prometheus.value("sum(DCGM_FI_DEV_POWER_USAGE)")
    shown = sum(smi_power(node, n) for n in range(3))
    assert abs(total - shown) <= 0.03 * shown  # within the noise of a second apart
    rate = prometheus.value("sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[30s]) / 1000)")
    mean = prometheus.value("sum(avg_over_time(DCGM_FI_DEV_POWER_USAGE[30s]))")
    assert abs(rate - mean) <= 0.03 * mean  # mJ per second is the power, in W
    # fake-train's ranks draw near their cap, their tensor cores busy, on every node
    assert len(prometheus.query("DCGM_FI_DEV_POWER_USAGE > 500")) == 6
    assert len(prometheus.query("avg_over_time(DCGM_FI_PROF_PIPE_TENSOR_ACTIVE[30s]) > 0.3")) == 6
    print(
        f"\nPromQL over {len(prometheus.query('up == 1'))} targets: "
        f"sum(DCGM_FI_DEV_POWER_USAGE) = {total:.1f} W (fake-nvidia-smi: {shown:.1f} W); "
        f"sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[30s]) / 1000) = {rate:.1f} W, "
        f"sum(avg_over_time(DCGM_FI_DEV_POWER_USAGE[30s])) = {mean:.1f} W"
    )


def test_an_injected_xid_shows_in_prometheus(stack: tuple[Node, Prometheus]) -> None:
    node, prometheus = stack
    done = fakehw("inject", "ecc-uncorrectable", "--gpu", "1", "--node", "2", env=node.env)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: prometheus.query("DCGM_FI_DEV_XID_ERRORS == 48"), timeout=20, interval=0.5)
    hit = prometheus.query("DCGM_FI_DEV_XID_ERRORS == 48")
    assert [r["metric"]["gpu"] for r in hit] == ["1"]  # type: ignore[index]


def test_the_file_sd_is_the_same_list(stack: tuple[Node, Prometheus], tmp_path: Path) -> None:
    node, _ = stack
    printed = fakehw("exporter", "--print-file-sd", "--listen", "127.0.0.1:9400", env=node.env)
    assert printed.returncode == 0, printed.stderr
    targets = json.loads(printed.stdout)
    assert [t["labels"]["__metrics_path__"].split("/")[2] for t in targets] == [
        f"dgx-h100-0{n}" for n in (1, 2, 3)
    ]
    assert {t["targets"][0] for t in targets} == {"127.0.0.1:9400"}
