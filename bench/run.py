"""fakehw benchmarks: one command, one table.

    python bench/run.py                 # full run, about 5 minutes
    python bench/run.py --quick         # shorter windows, about 2 minutes
    python bench/run.py --only load     # one section (daemon, snapshots, load, ...)

Measures, against real daemon processes in a private runtime directory:

* daemon CPU (% of one core, user+system, from the kernel's accounting) while
  the model ticks at 10 Hz with every GPU training, for 8, 64, 1024 and 8192
  GPUs; and the daemon's resident memory;
* scale: a cluster of 8,192 nodes x 8 GPUs (65,536): the daemon's start, CPU and
  memory idle and with every GPU training, the ``summary`` op, and the wall time of
  ``fake-nvitop --cluster -1`` (within 5 s);
* snapshot requests per second and p99 latency for one 8-GPU node with 1 and
  with 50 concurrent clients (each client a connection doing request after
  request; clients run in 5 worker processes so they are not one GIL);
* load: 200 connections subscribed to one training 8-GPU node every 100 ms
  for 60 s (15 s with --quick): errors, the gap between pushes, the age of a
  pushed snapshot, and the daemon's file descriptors and memory before,
  during and after;
* recovery: ``kill -9`` of the daemon under a running fake-train and a viewer,
  10 times (5 with --quick): the time until a new daemon serves the re-attached
  ranks;

* the live ``fake-nvitop`` monitor's CPU (1 s refresh, 8 training GPUs, on a
  120x40 pseudo-terminal) over 60 s (20 s with --quick), side by side with the
  real nvitop on the same fake GPUs (through ``fakehw exec``);
* NVML: ``nvmlDeviceGetPowerUsage`` per call and ``nvmlInit``, through the native
  ``libnvidia-ml.so.1`` (from C, from ctypes, from pynvml) and through the Python
  layer (pynvml with fakehw's hook), side by side (``--only nvml``);
* start-up: the median wall time of a one-shot ``fake-nvidia-smi`` (the
  default table, and a ``--query-gpu`` CSV, on an 8-GPU node) and ``fake-gpustat``
  against ``python3 -c pass`` on the same interpreter, runs interleaved so machine
  noise hits both alike, with ``python3 -c 'import json'`` beside them as the floor of
  any viewer that speaks JSON. The package is byte-compiled first, as an installed one
  is (pip compiles what it installs; an environment with PYTHONDONTWRITEBYTECODE would
  otherwise compile every module of every run). The interpreter is the development
  environment's, whose editable install loads pathlib and re at every start, the
  baseline's too: in a plain ``pip install .`` the interpreter starts in about half the
  time and the ratios are larger (fake-nvidia-smi 2.4 x, ``import json`` alone 1.8 x).

Targets: <= 1 us per NVML call from C; <= 1 % of a core at 64 GPUs, <= 5 % at 1024 GPUs, >= 2,000
snapshots/s for one 8-GPU node; a one-shot table within 1.5 x
``python3 -c pass`` (the real nvidia-smi: 1.34 x on a real H100 host); fake-nvitop <= 3 % of a core;
under load no errors, push gaps p99 <= 3 intervals, snapshots younger than
300 ms at p99, no fd left open and no memory growth under load; recovery from
``kill -9`` within 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fakehw.service.client import Client  # noqa: E402

T = TypeVar("T")


def start_daemon(runtime: Path, nodes: int) -> int:
    subprocess.run(
        [sys.executable, "-m", "fakehw", "daemon", "run", "--runtime-dir", str(runtime),
         "--nodes", str(nodes), "--idle-timeout", "600", "--detach"],
        check=True,
        cwd=ROOT,
    )  # fmt: skip
    return int((runtime / "daemon.pid").read_text())


def stop_daemon(runtime: Path) -> None:
    """Stop the daemon and wait until it is gone (it writes its state as it leaves)."""
    with Client.connect(root=runtime, autostart=False) as client:
        pid = client.request("shutdown")["daemon_pid"]
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        psutil.Process(pid).wait(timeout=10)


def daemon_cpu(gpus: int, seconds: float) -> dict[str, object]:
    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-"))
    try:
        pid = start_daemon(runtime, nodes=gpus // 8)
        with Client.connect(root=runtime, autostart=False) as client:
            for node in range(gpus // 8):
                client.request(
                    "attach", pid=100000 + node, watch_pid=os.getpid(), name="python3",
                    gpus=list(range(node * 8, node * 8 + 8)), job="bench", phase="train",
                )  # fmt: skip
        process = psutil.Process(pid)
        time.sleep(2.0)  # let allocations settle
        before = process.cpu_times()
        started = time.monotonic()
        time.sleep(seconds)
        after = process.cpu_times()
        elapsed = time.monotonic() - started
        used = (after.user - before.user) + (after.system - before.system)
        with Client.connect(root=runtime, autostart=False) as client:
            status = client.request("status")
        rss_mib = process.memory_info().rss / 2**20
        stop_daemon(runtime)
        return {
            "gpus": gpus,
            "cpu_pct": 100.0 * used / elapsed,
            "step_ms": status["step_cpu_ms_mean"],
            "rss_mib": rss_mib,
        }
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def _cpu_over(process: psutil.Process, seconds: float) -> float:
    """% of one core ``process`` used over the next ``seconds``."""
    before = process.cpu_times()
    started = time.monotonic()
    time.sleep(seconds)
    after = process.cpu_times()
    used = (after.user - before.user) + (after.system - before.system)
    return 100.0 * used / (time.monotonic() - started)


def scale(nodes: int, seconds: float) -> list[list[object]]:
    """A cluster of ``nodes`` x 8 GPUs (8,192 nodes, 65,536 GPUs): the daemon
    idle and with every GPU training, the cluster summary, and the cluster grid."""
    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-"))
    gpus = nodes * 8
    rows: list[list[object]] = []
    try:
        began = time.monotonic()
        pid = start_daemon(runtime, nodes=nodes)
        rows.append([f"daemon start, {gpus} GPUs", f"{time.monotonic() - began:.2f} s", "", ""])
        process = psutil.Process(pid)
        time.sleep(2.0)
        idle = _cpu_over(process, seconds)
        rows.append(["daemon CPU, idle", f"{idle:.1f} %", "", ""])
        rows.append(["daemon RSS, idle", f"{process.memory_info().rss / 2**20:.0f} MiB", "", ""])
        began = time.monotonic()
        with Client.connect(root=runtime, autostart=False) as client:
            for first in range(0, nodes, 512):
                client.request_many([
                    ("attach", {"pid": 100000 + node, "watch_pid": os.getpid(), "name": "python3",
                                "gpus": list(range(node * 8, node * 8 + 8)), "job": "bench",
                                "phase": "train"})
                    for node in range(first, min(first + 512, nodes))
                ])  # fmt: skip
        rows.append([f"attach {nodes} processes x 8 GPUs", f"{time.monotonic() - began:.2f} s",
                     "", ""])  # fmt: skip
        time.sleep(3.0)
        training = _cpu_over(process, seconds)
        with Client.connect(root=runtime, autostart=False) as client:
            status = client.request("status")
            timings, size = [], 0
            for _ in range(10):
                began = time.perf_counter()
                summary = client.request("summary")
                timings.append(time.perf_counter() - began)
                size = len(str(summary))
        rows.append(["daemon CPU, every GPU training", f"{training:.1f} %",
                     f"{status['step_cpu_ms_mean']:.1f} ms per step", ""])  # fmt: skip
        rows.append(["daemon RSS, training", f"{process.memory_info().rss / 2**20:.0f} MiB", "",
                     ""])  # fmt: skip
        rows.append(["summary op (whole cluster)", f"{statistics.median(timings) * 1000:.0f} ms",
                     f"~{size / 1e6:.1f} MB", ""])  # fmt: skip
        env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime), "COLUMNS": "80"}
        walls = []
        for _ in range(3):
            began = time.monotonic()
            command = [sys.executable, "-m", "fakehw.nvitop", "--cluster", "-1"]
            grid = subprocess.run(command, env=env, capture_output=True, text=True, check=True,
                                  cwd=ROOT)  # fmt: skip
            walls.append(time.monotonic() - began)
        lines = grid.stdout.count("\n")
        wall = statistics.median(walls)
        rows.append([f"fake-nvitop --cluster -1 ({lines} lines)", f"{wall:.2f} s", "<= 5 s",
                     "ok" if wall <= 5 else "MISSED"])  # fmt: skip
        first_frame = _live_grid_first_frame(env, f"{gpus} x ")
        rows.append(["fake-nvitop --cluster (live, 120x40 pty): first frame",
                     f"{first_frame:.2f} s", "<= 5 s",
                     "ok" if first_frame <= 5 else "MISSED"])  # fmt: skip
        stop_daemon(runtime)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    return rows


def _live_grid_first_frame(env: dict[str, str], heading: str) -> float:
    """Seconds from starting the live ``fake-nvitop --cluster`` on a 120x40 pseudo-terminal
    to its first frame on screen (the grid's heading), then ``q``."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    began = time.monotonic()
    monitor = subprocess.Popen(
        [sys.executable, "-m", "fakehw.nvitop", "--cluster"], stdin=follower, stdout=follower,
        stderr=follower, env={**env, "TERM": "xterm-256color"}, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    try:
        while heading.encode() not in seen and time.monotonic() - began < 60:
            seen += os.read(leader, 65536)
        shown = time.monotonic() - began
        os.write(leader, b"q")
        deadline = time.monotonic() + 10
        while monitor.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # keep draining, or its writes block
                os.read(leader, 65536)
    finally:
        if monitor.poll() is None:
            monitor.kill()
        os.close(leader)
    return shown


def _run_threads(target: Callable[[], None], count: int) -> None:
    """Run ``target`` in ``count`` threads at once and wait for them all."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _shares(clients: int, workers: int) -> list[int]:
    """``clients`` split as evenly as can be over ``workers`` processes."""
    return [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]


def _client_worker(runtime: str, connections: int, seconds: float, queue: object) -> None:
    """Run ``connections`` clients in threads; report their latencies."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(connections)

    def one() -> None:
        mine = []
        with Client.connect(root=Path(runtime), autostart=False) as client:
            barrier.wait()
            deadline = time.perf_counter() + seconds
            while True:
                began = time.perf_counter()
                if began >= deadline:
                    break
                client.snapshot(0)
                mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    _run_threads(one, connections)
    queue.put(latencies)  # type: ignore[attr-defined]


def snapshot_rate(clients: int, seconds: float) -> dict[str, object]:
    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-"))
    try:
        start_daemon(runtime, nodes=1)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        workers = min(clients, 5)
        shares = _shares(clients, workers)
        procs = [
            context.Process(target=_client_worker, args=(str(runtime), share, seconds, queue))
            for share in shares
        ]
        for proc in procs:
            proc.start()
        latencies: list[float] = []
        for _ in procs:
            latencies.extend(queue.get(timeout=seconds + 60))
        for proc in procs:
            proc.join()
        stop_daemon(runtime)
        latencies.sort()
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        return {
            "clients": clients,
            "rate": len(latencies) / seconds,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * p99,
        }
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def _subscriber_worker(
    runtime: str, connections: int, interval_ms: int, seconds: float, queue: object
) -> None:
    """``connections`` subscribers in threads; report push gaps, staleness, errors."""
    gaps: list[float] = []
    staleness: list[float] = []
    received: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(connections)

    def one() -> None:
        my_gaps: list[float] = []
        my_staleness: list[float] = []
        count = 0
        try:
            with Client.connect(root=Path(runtime), autostart=False) as client:
                barrier.wait(timeout=120)
                end = time.time() + seconds
                last = None
                for snapshot in client.subscribe(interval_ms, node=0):
                    now = time.time()
                    count += 1
                    my_staleness.append(now - snapshot["time"])
                    if last is not None:
                        my_gaps.append(now - last)
                    last = now
                    if now >= end:
                        break
        except Exception as exc:  # every failure is counted, none ends the bench
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            gaps.extend(my_gaps)
            staleness.extend(my_staleness)
            received.append(count)

    _run_threads(one, connections)
    queue.put((gaps, staleness, received, errors))  # type: ignore[attr-defined]


def _daemon_usage(process: psutil.Process) -> tuple[int, float]:
    """Open file descriptors and resident MiB of the daemon."""
    return process.num_fds(), process.memory_info().rss / 2**20


def subscriber_load(clients: int, interval_ms: int, seconds: float) -> list[list[object]]:
    """``clients`` connections subscribed to one node every ``interval_ms`` for ``seconds``,
    with a training job attached; the daemon's fds and memory before, during, after."""
    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-"))
    try:
        pid = start_daemon(runtime, nodes=1)
        daemon = psutil.Process(pid)
        with Client.connect(root=runtime, autostart=False) as client:
            client.request("attach", pid=100000, watch_pid=os.getpid(), name="python3",
                           gpus=list(range(8)), job="bench", phase="train")  # fmt: skip
        time.sleep(2.0)
        fds_before, rss_before = _daemon_usage(daemon)
        cpu_before = daemon.cpu_times()
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        workers = 4
        shares = _shares(clients, workers)
        procs = [
            context.Process(target=_subscriber_worker,
                            args=(str(runtime), share, interval_ms, seconds, queue))
            for share in shares
        ]  # fmt: skip
        started = time.monotonic()
        for proc in procs:
            proc.start()
        samples: list[tuple[float, int, float]] = []  # (seconds in, fds, rss)
        while any(proc.is_alive() for proc in procs) and time.monotonic() - started < seconds + 90:
            samples.append((time.monotonic() - started, *_daemon_usage(daemon)))
            if queue.qsize() == len(procs):  # type: ignore[attr-defined]
                break
            time.sleep(1.0)
        results = [queue.get(timeout=120) for _ in procs]
        for proc in procs:
            proc.join()
        elapsed = time.monotonic() - started
        cpu_after = daemon.cpu_times()
        time.sleep(1.0)  # let the daemon notice the closed connections
        fds_after, rss_after = _daemon_usage(daemon)
        stop_daemon(runtime)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)

    gaps = sorted(g for result in results for g in result[0])
    staleness = sorted(s for result in results for s in result[1])
    received = [n for result in results for n in result[2]]
    errors = [e for result in results for e in result[3]]

    def pct(values: list[float], q: float) -> float:
        return 1000 * values[int(q * (len(values) - 1))] if values else float("nan")

    under_load = [s for s in samples if s[0] >= 10.0] or samples
    fds_peak = max(s[1] for s in samples)
    rss_early, rss_late = under_load[0][2], under_load[-1][2]
    expected = int(seconds * 1000 / interval_ms)
    cpu_pct = 100 * ((cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system))
    cpu_pct /= elapsed

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    return [
        ["errors (exceptions, lost connections)", len(errors), "0", verdict(not errors)],
        ["clients that received pushes", f"{sum(1 for n in received if n)}/{clients}",
         f"{clients}/{clients}", verdict(sum(1 for n in received if n) == clients)],
        ["pushes per client (min / median)", f"{min(received, default=0)} / "
         f"{statistics.median(received) if received else 0:.0f}", f"~{expected}", ""],
        ["gap between pushes p50 / p99 / max ms",
         f"{pct(gaps, 0.5):.0f} / {pct(gaps, 0.99):.0f} / {pct(gaps, 1.0):.0f}",
         f"p99 <= {3 * interval_ms}", verdict(pct(gaps, 0.99) <= 3 * interval_ms)],
        ["age of a pushed snapshot p50 / p99 ms",
         f"{pct(staleness, 0.5):.0f} / {pct(staleness, 0.99):.0f}", "p99 <= 300",
         verdict(pct(staleness, 0.99) <= 300)],
        ["daemon CPU (one core)", f"{cpu_pct:.1f} %", "", ""],
        ["daemon fds before / peak / after", f"{fds_before} / {fds_peak} / {fds_after}",
         "after = before", verdict(fds_after == fds_before)],
        ["daemon RSS MiB before / peak / after",
         f"{rss_before:.1f} / {max(s[2] for s in samples):.1f} / {rss_after:.1f}", "", ""],
        [f"daemon RSS growth {under_load[0][0]:.0f}-{under_load[-1][0]:.0f} s under load",
         f"{rss_late - rss_early:+.1f} MiB", "<= 2 MiB", verdict(rss_late - rss_early <= 2.0)],
    ]  # fmt: skip


def recovery(kills: int) -> list[list[object]]:
    """kill -9 the daemon ``kills`` times under a running fake-train and a viewer;
    time until a new daemon serves the job's ranks again."""
    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-"))
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime)}
    train = subprocess.Popen(
        [sys.executable, "-m", "fakehw.train", "--gpus", "8", "--seed", "3", "--speed-factor", "5"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    viewer = subprocess.Popen(
        [sys.executable, "-m", "fakehw.smi", "--query-gpu=index,temperature.gpu",
         "--format=csv,noheader", "-lms", "200"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def ranks(pid: int) -> set[int]:
        if pid == 0 or current_pid() != pid:
            return set()
        try:
            with Client.connect(root=runtime, autostart=False) as client:
                node = client.snapshot(0)["nodes"][0]
            return {process["pid"] for process in node["processes"]}
        except (OSError, ValueError, RuntimeError):
            return set()

    def current_pid() -> int:
        try:
            return int((runtime / "daemon.pid").read_text())
        except (OSError, ValueError):
            return 0

    times: list[float] = []
    survived = True
    try:
        deadline = time.monotonic() + 90
        while len(ranks(current_pid())) < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        for _ in range(kills):
            time.sleep(3.0)
            pid = current_pid()
            expected = ranks(pid)
            killed_at = time.monotonic()
            os.kill(pid, 9)
            while time.monotonic() - killed_at < 30:
                new = current_pid()
                if new not in (0, pid) and ranks(new) == expected:
                    times.append(time.monotonic() - killed_at)
                    break
                time.sleep(0.02)
        survived = train.poll() is None and viewer.poll() is None
    finally:
        for process in (train, viewer):
            process.terminate()
            process.wait(timeout=30)
        with contextlib.suppress(Exception):
            stop_daemon(runtime)
        shutil.rmtree(runtime, ignore_errors=True)
    times.sort()
    worst = times[-1] if times else float("nan")
    return [
        ["daemon killed (SIGKILL)", kills, "", ""],
        ["recovered: new daemon, 8 ranks re-attached", f"{len(times)}/{kills}", f"{kills}/{kills}",
         "ok" if len(times) == kills else "MISSED"],
        ["time to recover p50 / max s",
         f"{statistics.median(times) if times else float('nan'):.2f} / {worst:.2f}", "max <= 2 s",
         "ok" if worst <= 2.0 else "MISSED"],
        ["fake-train and the viewer still running", "yes" if survived else "no", "yes",
         "ok" if survived else "MISSED"],
    ]  # fmt: skip


def startup(runs: int) -> list[list[object]]:
    """Median wall times of one-shot commands, interleaved with the baseline."""
    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-"))
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime)}
    launcher = str(ROOT / "bin" / "fake-nvidia-smi")
    commands = {
        "python3 -c pass": [sys.executable, "-c", "pass"],
        # the floor under any viewer that speaks JSON: json brings re, enum and functools
        "python3 -c 'import json'": [sys.executable, "-c", "import json"],
        "fake-nvidia-smi": [sys.executable, launcher],
        "fake-nvidia-smi --query-gpu=...": [
            sys.executable, launcher, "--query-gpu=index,temperature.gpu,power.draw,memory.used",
            "--format=csv",
        ],
        "fake-gpustat": [sys.executable, "-m", "fakehw.gpustat"],
    }  # fmt: skip
    import compileall

    compileall.compile_dir(str(ROOT / "fakehw"), quiet=1)
    try:
        start_daemon(runtime, nodes=1)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, command in commands.items():
                began = time.perf_counter()
                subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
                times[name].append(time.perf_counter() - began)
        stop_daemon(runtime)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    base = statistics.median(times["python3 -c pass"])
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        ratio = median / base
        limit = 1.5 if name.startswith("fake-nvidia-smi") else 2.5
        target = "" if name.startswith("python3") else f"<= {limit} x"  # python3: references
        verdict = "" if not target else ("ok" if ratio <= limit else "MISSED")
        rows.append([name, f"{1000 * median:.1f}", f"{ratio:.2f} x", target, verdict])
    return rows


def _read_lines(
    process: subprocess.Popen[bytes], seconds: float, until: str
) -> list[tuple[float, str]]:
    """(seconds since start, line) of what ``process`` writes to its pipe, up to the first
    line matching the regular expression ``until`` or ``seconds``."""
    import re
    import select

    began = time.monotonic()
    assert process.stdout is not None
    seen: list[tuple[float, str]] = []
    while time.monotonic() - began < seconds:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if not ready:
            continue
        data = os.read(process.stdout.fileno(), 65536)
        if not data:
            break
        now = time.monotonic() - began
        # what arrived counts at once, a bar redrawn with \r and no newline too
        for raw in data.replace(b"\r", b"\n").split(b"\n"):
            line = raw.decode(errors="replace")
            if line.strip():
                seen.append((now, line))
                if re.search(until, line):
                    return seen
    return seen
    return seen


# The line each style writes once its first step is done (default, hf: tqdm's bar at
# 1/N) or as it starts it (megatron, deepspeed: nothing until their first log interval).
TRAIN_STYLES = {
    "default": r"step\s+1/",
    "hf": r"\| 1/\d+ \[",
    "megatron": r"before the start of training step",
    "deepspeed": r"^training \.\.\.",
}


def train_startup(seconds: float) -> list[list[object]]:
    """fake-train at speed 1 on a pipe, as `fake-train > train.log` runs it, from nothing
    (a fresh runtime directory: the daemon starts too): the time to its first training
    step and the longest silence on the pipe before it."""
    rows = []
    for style, first_step in TRAIN_STYLES.items():
        runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-"))
        env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime)}
        process = subprocess.Popen(
            [sys.executable, "-m", "fakehw.train", "--style", style, "--seed", "1"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            seen = _read_lines(process, seconds, first_step)
        finally:
            process.terminate()
            process.wait(timeout=60)
            stop_daemon(runtime)
            shutil.rmtree(runtime, ignore_errors=True)
        import re

        reached = seen[-1][0] if seen and re.search(first_step, seen[-1][1]) else None
        moments = [0.0] + [t for t, _ in seen]
        silence = max(later - earlier for earlier, later in itertools.pairwise(moments))
        quiet_enough = silence <= 6.0
        if style == "default":  # the README's command: its first step within 20 s
            target = "<= 20 s, silence <= 6 s"
            met = reached is not None and reached <= 20.0 and quiet_enough
        else:
            target, met = "silence <= 6 s", quiet_enough
        shown = "not reached" if reached is None else f"{reached:.1f} s"
        rows.append([style, shown, f"{silence:.1f} s", target, "ok" if met else "MISSED"])
    return rows


MONITORS = {
    "fake-nvitop": [sys.executable, "-m", "fakehw.nvitop", "--interval", "1"],
    # the real nvitop on the same fake GPUs, through the NVML layer
    "nvitop (real, fakehw exec)": [sys.executable, "-m", "fakehw", "exec", "--",
                                   str(Path(sys.executable).parent / "nvitop"), "--interval", "1"],
}  # fmt: skip


def monitor_cpu(seconds: float, command: list[str] | None = None) -> dict[str, float]:
    """CPU used by a live monitor (1 s refresh) on an 8-GPU node that trains,
    run on a pseudo-terminal of 120x40 as a user would."""
    import fcntl
    import pty
    import struct
    import termios

    import psutil

    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-"))
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime), "TERM": "xterm-256color"}
    sleepers = []
    try:
        start_daemon(runtime, nodes=1)
        from fakehw.service.client import Client

        with Client.connect(root=str(runtime), autostart=False) as client:
            for gpu in range(8):
                sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
                sleepers.append(sleeper)
                client.request("attach", pid=sleeper.pid, name="python", gpus=[gpu],
                               memory_plan={"train": 60000}, phase="train")  # fmt: skip
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        monitor = subprocess.Popen(
            command or MONITORS["fake-nvitop"],
            stdin=follower,
            stdout=follower,
            stderr=follower,
            env=env,
            start_new_session=True,
        )
        os.close(follower)
        drained = threading.Event()

        def drain() -> None:
            while not drained.is_set():
                try:
                    if not os.read(leader, 65536):
                        return
                except OSError:
                    return

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        time.sleep(3.0)  # start-up is not the steady state
        process = psutil.Process(monitor.pid)
        before = process.cpu_times()
        time.sleep(seconds)
        after = process.cpu_times()
        used = (after.user - before.user) + (after.system - before.system)
        rss = process.memory_info().rss / 2**20
        monitor.terminate()
        monitor.wait(timeout=10)
        drained.set()
        os.close(leader)
        stop_daemon(runtime)
        return {"cpu_pct": 100 * used / seconds, "rss_mib": rss}
    finally:
        for sleeper in sleepers:
            sleeper.kill()
        shutil.rmtree(runtime, ignore_errors=True)


def output_cost(gpus: int, steps: int) -> list[object]:
    """fake-train on ``gpus`` GPUs for ``steps`` steps as fast as it plays (speed factor
    1000, on a pipe), with and without ``--output-dir``: its CPU (the process and its
    ranks) and wall time side by side, and what the output directory holds."""
    import resource

    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-"))
    out = runtime / "out"
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime)}
    nodes = max(1, gpus // 8)
    start_daemon(runtime, nodes)
    measured = {}
    try:
        for label, extra in (("without", []), ("with", ["--output-dir", str(out)])):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            began = time.monotonic()
            subprocess.run(
                [sys.executable, "-m", "fakehw.train", "--gpus", str(gpus), "--nodes",
                 str(nodes), "--seed", "1", "--speed-factor", "1000", "--exit-after-steps",
                 str(steps), *extra],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                check=True,
            )  # fmt: skip
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            measured[label] = (cpu, time.monotonic() - began)
        from fakehw.train.output.files import entries, usage

        files, apparent, on_disk = usage(entries(out))
    finally:
        stop_daemon(runtime)
        shutil.rmtree(runtime, ignore_errors=True)
    ratio = measured["with"][0] / measured["without"][0]
    return [gpus, steps, f"{measured['without'][0]:.1f} s / {measured['without'][1]:.1f} s",
            f"{measured['with'][0]:.1f} s / {measured['with'][1]:.1f} s", f"{ratio:.2f} x",
            f"{files:,} files, {apparent / 1e9:.0f} GB, {on_disk / 2**20:.1f} MiB on disk",
            "<= 1.3 x", "ok" if ratio <= 1.3 else "MISSED"]  # fmt: skip


NVML_C_BENCH = r"""
#include <nvml.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9;
}
int main(int argc, char **argv) {
    long calls = atol(argv[1]);
    double start = now();
    if (nvmlInit_v2() != NVML_SUCCESS) return 1;
    double init = now() - start;
    nvmlDevice_t device;
    unsigned int power, sum = 0;
    nvmlDeviceGetHandleByIndex_v2(0, &device);
    start = now();
    for (long k = 0; k < calls; k++) { nvmlDeviceGetPowerUsage(device, &power); sum += power & 1; }
    double each = (now() - start) / calls;
    printf("%.9f %.9f %u\n", init, each, sum);
    return 0;
}
"""
PYNVML_BENCH = """
import sys, time
{setup}
import pynvml as N
start = time.perf_counter()
N.nvmlInit()
init = time.perf_counter() - start
h = N.nvmlDeviceGetHandleByIndex(0)
calls = int(sys.argv[1])
start = time.perf_counter()
for _ in range(calls):
    N.nvmlDeviceGetPowerUsage(h)
print(init, (time.perf_counter() - start) / calls)
"""
CTYPES_BENCH = """
import ctypes, sys, time
lib = ctypes.CDLL("libnvidia-ml.so.1")
lib.nvmlInit_v2()
h, p = ctypes.c_void_p(), ctypes.c_uint()
lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(h))
call, ref = lib.nvmlDeviceGetPowerUsage, ctypes.byref(p)
calls = int(sys.argv[1])
start = time.perf_counter()
for _ in range(calls):
    call(h, ref)
print(0.0, (time.perf_counter() - start) / calls)
"""


def nvml_calls(quick: bool) -> list[list[object]]:
    """nvmlDeviceGetPowerUsage per call, and nvmlInit, through the C library (from C,
    from ctypes, from pynvml) and through the Python layer (pynvml with fakehw's hook),
    side by side on one idle 8-GPU node; each the median of 5 runs."""
    from fakehw.nvml import native_directory

    native = native_directory()
    if native is None:
        return [["libnvidia-ml.so.1 not built (no C compiler at install)", "", "", "", ""]]
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    include = next((str(Path(r) / sub / "include") for r in (spec.submodule_search_locations
                    if spec else []) for sub in ("cu13", "nvml_dev")
                    if (Path(r) / sub / "include" / "nvml.h").is_file()), None)  # fmt: skip
    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-nvml-"))
    start_daemon(runtime, 1)
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime), "LD_LIBRARY_PATH": native}
    hook = "from fakehw.nvml.hook import install; install()"
    scale = 1 if not quick else 4
    runs: dict[str, list[str]] = {
        "pynvml on libnvidia-ml.so.1": [sys.executable, "-c", PYNVML_BENCH.format(setup=""),
                                        str(200_000 // scale)],
        "ctypes on libnvidia-ml.so.1": [sys.executable, "-c", CTYPES_BENCH, str(200_000 // scale)],
        "pynvml on the Python layer": [sys.executable, "-c", PYNVML_BENCH.format(setup=hook),
                                       str(20_000 // scale)],
    }  # fmt: skip
    try:
        if include is not None:
            source = runtime / "bench.c"
            source.write_text(NVML_C_BENCH)
            compile_c = ["cc", "-O2", "-std=gnu11", "-I", include, str(source), "-o",
                         str(runtime / "bench"), "-L", native, "-lnvidia-ml"]  # fmt: skip
            subprocess.run(compile_c, check=True)
            runs = {"C on libnvidia-ml.so.1": [str(runtime / "bench"), str(2_000_000 // scale)],
                    **runs}  # fmt: skip
        measured = {}
        for name, command in runs.items():
            samples = []
            for _ in range(5):
                out = subprocess.run(command, env=env, capture_output=True, text=True,
                                     check=True).stdout.split()  # fmt: skip
                samples.append((float(out[0]), float(out[1])))
            measured[name] = (statistics.median(s[0] for s in samples),
                              statistics.median(s[1] for s in samples))  # fmt: skip
    finally:
        stop_daemon(runtime)
        shutil.rmtree(runtime, ignore_errors=True)
    base = measured.get("C on libnvidia-ml.so.1", (0.0, 0.0))[1]
    targets = {"C on libnvidia-ml.so.1": (1e-6, "<= 1 us")}
    rows = []
    for name, (init, each) in measured.items():
        target, label = targets.get(name, (None, ""))
        verdict = "" if target is None else ("ok" if each <= target else "MISSED")
        ratio = f"{each / base:.0f} x" if base else ""
        rows.append([name, f"{each * 1e6:.3f}", ratio, f"{init * 1e3:.2f}" if init else "",
                     label, verdict])  # fmt: skip
    return rows


PER_NODE_SCRAPE = """
import json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
port, interval, rounds = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
targets = json.load(urllib.request.urlopen(base + "/sd", timeout=30))
paths = [t["labels"]["__metrics_path__"] for t in targets]
def scrape(path):
    started = time.monotonic()
    with urllib.request.urlopen(base + path, timeout=interval) as answer:
        size = len(answer.read())
    return time.monotonic() - started, answer.status, size
latencies, failed, late, sizes = [], 0, 0, []
with ThreadPoolExecutor(8) as pool:
    for _ in range(rounds):
        begun = time.monotonic()
        futures = []
        for k, path in enumerate(paths):  # spread over the interval, as Prometheus does
            time.sleep(max(0.0, begun + k * interval / len(paths) - time.monotonic()))
            futures.append(pool.submit(scrape, path))
        for future in futures:
            try:
                seconds, status, size = future.result()
                latencies.append(seconds); sizes.append(size); failed += status != 200
            except Exception:
                failed += 1
        late += time.monotonic() - begun > interval * 1.05
print(json.dumps({"targets": len(paths), "latencies": latencies, "failed": failed,
                  "late_rounds": late, "bytes": sum(sizes) / max(1, len(sizes))}))
"""


def free_port() -> int:
    """A loopback port nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def training_cluster_exporter(nodes: int) -> Iterator[tuple[int, psutil.Process, psutil.Process]]:
    """A daemon of ``nodes`` x 8 GPUs, every GPU training, and the exporter serving it:
    the exporter's port, the daemon's and the exporter's processes."""

    runtime = Path(tempfile.mkdtemp(prefix="fhw-bench-sd-"))
    env = {**os.environ, "FAKEHW_RUNTIME_DIR": str(runtime)}
    exporter = None
    try:
        pid = start_daemon(runtime, nodes=nodes)
        with Client.connect(root=runtime, autostart=False) as client:
            for node in range(nodes):
                client.request(
                    "attach", pid=200000 + node, watch_pid=os.getpid(), name="python3",
                    gpus=list(range(node * 8, node * 8 + 8)), job="bench", phase="train",
                )  # fmt: skip
        port = free_port()
        exporter = subprocess.Popen(
            [sys.executable, "-m", "fakehw", "exporter", "--listen", f"127.0.0.1:{port}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert exporter.stdout is not None
        exporter.stdout.readline()  # listening
        yield port, psutil.Process(pid), psutil.Process(exporter.pid)
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(timeout=30)
        with contextlib.suppress(Exception):
            stop_daemon(runtime)
        shutil.rmtree(runtime, ignore_errors=True)


def cpu_percent(processes: list[psutil.Process], run: Callable[[], T]) -> tuple[T, list[float]]:
    """``run()``'s result and each process's CPU while it ran, in % of one core."""
    before = [p.cpu_times() for p in processes]
    started = time.monotonic()
    result = run()
    elapsed = time.monotonic() - started
    after = [p.cpu_times() for p in processes]
    return result, [100.0 * ((a.user - b.user) + (a.system - b.system)) / elapsed
                    for a, b in zip(after, before, strict=True)]  # fmt: skip


def per_node_scrapes(nodes: int, interval_s: float, rounds: int) -> list[list[object]]:
    """Every node of a cluster of ``nodes`` x 8 GPUs scraped as its own target, found
    through the exporter's /sd, every ``interval_s`` (Prometheus' default 15 s), while
    every GPU trains: scrape times, and the daemon's and the exporter's CPU. A real
    Prometheus scrapes when one is on PATH; otherwise a scraper that spreads the
    targets over the interval as Prometheus does."""
    prometheus = shutil.which("prometheus")
    if prometheus is not None:
        return prometheus_scrapes(prometheus, nodes, interval_s, rounds)
    import json

    with training_cluster_exporter(nodes) as (port, daemon, served):
        out, cpu = cpu_percent([daemon, served], lambda: subprocess.run(
            [sys.executable, "-c", PER_NODE_SCRAPE, str(port), str(interval_s), str(rounds)],
            capture_output=True, text=True, check=True,
        ).stdout)  # fmt: skip
    result = json.loads(out)
    latencies = sorted(result["latencies"])
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    holds = result["failed"] == 0 and result["late_rounds"] == 0
    return [
        ["scraper", "bench/run.py's own (no prometheus on PATH)", "", ""],
        ["targets found at /sd", f"{result['targets']:,}", "", ""],
        ["scrapes (every target, every round)", f"{len(latencies):,} in {rounds} rounds",
         "", ""],
        ["scrape time p50 / p99", f"{p50:.1f} / {p99:.1f} ms", "", ""],
        ["answer size", f"{result['bytes'] / 1024:.0f} KiB", "", ""],
        ["failed scrapes / late rounds", f"{result['failed']} / {result['late_rounds']}",
         f"0 / 0 at {interval_s:g} s", "ok" if holds else "MISSED"],
        ["daemon CPU while scraped", f"{cpu[0]:.1f} %", "", ""],
        ["exporter CPU", f"{cpu[1]:.1f} %", "", ""],
    ]  # fmt: skip


def prometheus_scrapes(binary: str, nodes: int, interval_s: float,
                       rounds: int) -> list[list[object]]:  # fmt: skip
    """The same, scraped by a real Prometheus (loopback, its own data directory), whose
    own series say how it went: ``up``, ``scrape_duration_seconds``, and the interval it
    kept (``prometheus_target_interval_length_seconds``)."""
    import json
    import urllib.parse
    import urllib.request

    work = Path(tempfile.mkdtemp(prefix="fhw-bench-prom-"))
    web = free_port()

    def query(promql: str, at: float | None = None) -> float:
        asked = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode(asked)
        with urllib.request.urlopen(url, timeout=30) as answer:
            result = json.load(answer)["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    with training_cluster_exporter(nodes) as (port, daemon, served):
        (work / "prometheus.yml").write_text(
            f"global:\n  scrape_interval: {interval_s:g}s\n  scrape_timeout: 10s\n"
            "scrape_configs:\n  - job_name: dcgm\n    http_sd_configs:\n"
            f"      - url: http://127.0.0.1:{port}/sd\n        refresh_interval: 30s\n"
        )
        server = subprocess.Popen(
            [binary, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{web}",
             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # every target found and scraped once
                with contextlib.suppress(OSError, KeyError, IndexError, ValueError):
                    if query("count(up)") >= nodes:
                        break
                time.sleep(1)
            time.sleep(interval_s)  # each target's first scrape is in
            window = f"{int(rounds * interval_s)}s"
            _, cpu = cpu_percent([daemon, served, psutil.Process(server.pid)],
                                 lambda: time.sleep(rounds * interval_s))  # fmt: skip
            at = time.time()  # every query over the same window
            scrapes = query(f"sum(count_over_time(up[{window}]))", at)
            failed = query(f"sum(count_over_time(up[{window}]) - sum_over_time(up[{window}]))", at)
            durations = f"scrape_duration_seconds[{window}]"
            p50 = query(f"quantile(0.5, quantile_over_time(0.5, {durations}))", at)
            p99 = query(f"quantile(0.99, max_over_time({durations}))", at)
            samples = query("avg(scrape_samples_scraped)", at)
            kept = interval_kept(web, interval_s)
            targets = query("count(up)")
        finally:
            server.terminate()
            server.wait(timeout=60)
            shutil.rmtree(work, ignore_errors=True)
    holds = failed == 0 and targets == nodes and kept <= interval_s * 1.05
    return [
        ["scraper", f"Prometheus {prometheus_version(binary)} (real)", "", ""],
        ["targets found at /sd and scraped", f"{targets:,.0f}", f"{nodes:,}", ""],
        ["scrapes in the window", f"{scrapes:,.0f} in {window}", "", ""],
        ["scrape time p50 / p99 (scrape_duration_seconds)",
         f"{p50 * 1000:.1f} / {p99 * 1000:.1f} ms", "", ""],
        ["samples per scrape", f"{samples:,.0f}", "", ""],
        ["failed scrapes / interval kept (p99)", f"{failed:.0f} / {kept:.2f} s",
         f"0 / <= {interval_s * 1.05:.2f} s", "ok" if holds else "MISSED"],
        ["daemon CPU while scraped", f"{cpu[0]:.1f} %", "", ""],
        ["exporter CPU", f"{cpu[1]:.1f} %", "", ""],
        ["Prometheus CPU", f"{cpu[2]:.1f} %", "", ""],
    ]  # fmt: skip


def interval_kept(port: int, interval_s: float) -> float:
    """The 99th percentile of the intervals Prometheus kept between a target's scrapes,
    from its own /metrics (it does not scrape itself here)."""
    import urllib.request

    wanted = (
        f'prometheus_target_interval_length_seconds{{interval="{interval_s:g}s",quantile="0.99"}}'
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(wanted):
                return float(line.split()[-1])
    return float("nan")


def prometheus_version(binary: str) -> str:
    shown = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    words = (shown.stdout + shown.stderr).split()
    return words[2] if len(words) > 2 else "?"


SECTIONS = ["daemon", "scale", "snapshots", "load", "recovery", "monitors", "startup", "train",
            "output", "nvml", "prometheus"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter measuring windows")
    parser.add_argument(
        "--only",
        choices=SECTIONS,
        action="append",
        help="run only this section (repeatable); default: all",
    )
    args = parser.parse_args()
    sections = args.only or SECTIONS
    cpu_window = 5.0 if args.quick else 20.0
    rate_window = 3.0 if args.quick else 10.0
    print(f"fakehw bench on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")

    if "daemon" in sections:
        targets = {64: 1.0, 1024: 5.0}
        rows = []
        for gpus in (8, 64, 1024, 8192):
            result = daemon_cpu(gpus, cpu_window)
            target = targets.get(gpus)
            verdict = "" if target is None else ("ok" if result["cpu_pct"] <= target else "MISSED")  # type: ignore[operator]
            rows.append(
                [gpus, f"{result['cpu_pct']:.2f} %", f"{result['step_ms']:.3f}",
                 f"{result['rss_mib']:.0f}", f"<= {target:g} %" if target else "", verdict]
            )  # fmt: skip
        print("Daemon CPU, model at 10 Hz, every GPU training")
        print(
            tabulate(
                rows, headers=["GPUs", "CPU (one core)", "ms per step", "RSS MiB", "target", ""]
            )
        )
        print()

    if "scale" in sections:
        print("8,192 nodes x 8 GPUs (65,536), model at 10 Hz")
        print(tabulate(scale(8192, cpu_window), headers=["", "measured", "", "target"]))
        print()

    if "snapshots" in sections:
        rows = []
        for clients in (1, 50):
            result = snapshot_rate(clients, rate_window)
            verdict = "ok" if result["rate"] >= 2000 else "MISSED"  # type: ignore[operator]
            rows.append(
                [clients, f"{result['rate']:,.0f}", f"{result['p50_ms']:.2f}",
                 f"{result['p99_ms']:.2f}", ">= 2,000/s", verdict]
            )  # fmt: skip
        print("Snapshots of one 8-GPU node")
        print(tabulate(rows, headers=["clients", "snapshots/s", "p50 ms", "p99 ms", "target", ""]))
        print()

    if "load" in sections:
        seconds = 15.0 if args.quick else 60.0
        rows = subscriber_load(200, 100, seconds)
        print(f"200 clients subscribed to one 8-GPU node every 100 ms for {seconds:.0f} s")
        print(tabulate(rows, headers=["", "measured", "target", ""]))
        print()

    if "recovery" in sections:
        kills = 5 if args.quick else 10
        print("kill -9 the daemon under fake-train (8 GPUs) and fake-nvidia-smi -lms 200")
        print(tabulate(recovery(kills), headers=["", "measured", "target", ""]))
        print()

    if "monitors" in sections:
        rows = []
        for name, command in MONITORS.items():
            if not os.path.exists(command[-3]) and "exec" in command:
                rows.append([name, "not installed (pip install nvitop)", "", "", ""])
                continue
            result = monitor_cpu(20.0 if args.quick else 60.0, command)
            target = "<= 3 %" if name == "fake-nvitop" else ""
            verdict = ("ok" if result["cpu_pct"] <= 3.0 else "MISSED") if target else ""
            rows.append([name, f"{result['cpu_pct']:.2f} %", f"{result['rss_mib']:.0f}", target,
                         verdict])  # fmt: skip
        print("Live monitors, 8 GPUs training, 1 s refresh, 120x40 pty")
        print(tabulate(rows, headers=["monitor", "CPU (one core)", "RSS MiB", "target", ""]))
        print()

    if "startup" in sections:
        rows = startup(15 if args.quick else 40)
        print("One-shot start-up, median wall time (daemon running)")
        print(tabulate(rows, headers=["command", "ms", "vs python3 -c pass", "target", ""]))
        print()

    if "output" in sections:
        rows = [output_cost(8, 1000), output_cost(512, 1000)]
        print("fake-train --output-dir: CPU and wall time (fake-train and its ranks)")
        print(tabulate(rows, headers=["GPUs", "steps", "without (CPU / wall)", "with",
                                      "CPU ratio", "DIR holds", "target", ""]))  # fmt: skip
        print()

    if "nvml" in sections:
        rows = nvml_calls(args.quick)
        print("NVML: nvmlDeviceGetPowerUsage per call, nvmlInit, one idle 8-GPU node")
        print(tabulate(rows, headers=["path", "us per call", "vs C", "nvmlInit ms", "target", ""]))
        print()

    if "prometheus" in sections:
        rounds = 2 if args.quick else 4
        print(f"1,024 nodes x 8 GPUs training, each node its own target, scraped every 15 s "
              f"({rounds} rounds)")  # fmt: skip
        print(tabulate(per_node_scrapes(1024, 15.0, rounds),
                       headers=["", "measured", "target", ""]))  # fmt: skip
        print()

    if "train" in sections:
        rows = train_startup(60.0)
        print("fake-train at speed 1 on a pipe, from no daemon: first training step")
        print(tabulate(rows, headers=["style", "first step", "longest silence", "target", ""]))


if __name__ == "__main__":
    main()
