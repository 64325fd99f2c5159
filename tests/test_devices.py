"""The cluster model in-process: behaviours a user of any view would notice."""

from __future__ import annotations

import numpy as np
import pytest

from fakehw.contract.config import ClusterConfig
from fakehw.contract.snapshot import (
    REASON_GPU_IDLE,
    REASON_HW_THERMAL,
    REASON_SW_POWER_CAP,
    REASON_SW_THERMAL,
)
from fakehw.devices import Cluster
from fakehw.processes import DRIVER_OVERHEAD_MIB, ClusterError

START = 1_800_000_000.0


def cluster(model: str = "h100", nodes: int = 1, gpus: int = 8, seed: int = 0) -> Cluster:
    return Cluster(
        ClusterConfig(gpu_model=model, nodes=nodes, gpus_per_node=gpus, seed=seed), START
    )


def run(c: Cluster, seconds: float, dt: float = 0.1) -> None:
    for _ in range(round(seconds / dt)):
        c.step(dt)


def gpu(c: Cluster, index: int) -> dict[str, object]:
    node, local = divmod(index, c.gpus_per_node)
    return dict(c.snapshot([node])["nodes"][0]["gpus"][local])


def test_memory_follows_the_caching_allocator() -> None:
    c = cluster()
    c.attach(100, "python3", [0])
    run(c, 1)
    assert gpu(c, 0)["memory_used_mib"] == c.spec.context_mib + DRIVER_OVERHEAD_MIB
    c.set_phase(100, "load", memory_mib=20000)
    levels = []
    for _ in range(60):
        c.step(0.1)
        levels.append(gpu(c, 0)["memory_used_mib"])
    assert levels == sorted(levels) and len(set(levels)) >= 5  # arrives in steps
    assert levels[-1] == 20000 + DRIVER_OVERHEAD_MIB
    c.set_phase(100, "eval", memory_mib=12000)  # asks for less: the allocator keeps it
    run(c, 1)
    assert gpu(c, 0)["memory_used_mib"] == 20009
    c.set_phase(100, "free")  # torch.cuda.empty_cache()
    run(c, 0.2)
    assert gpu(c, 0)["memory_used_mib"] == c.spec.free_floor_mib + DRIVER_OVERHEAD_MIB
    c.detach(100)
    assert gpu(c, 0)["memory_used_mib"] == 0  # at once, as the driver frees it


def test_memory_defaults_are_plausible_without_a_plan() -> None:
    c = cluster()
    c.attach(7, "python3", [0], phase="train")
    run(c, 3)
    used = gpu(c, 0)["memory_used_mib"]
    assert isinstance(used, int) and 0.5 * 81079 < used < 0.65 * 81079


def test_idle_gpus_differ_a_little_and_not_at_all_in_kind() -> None:
    c = cluster(seed=11)
    run(c, 5)
    gpus = c.snapshot()["nodes"][0]["gpus"]
    temps = [g["temperature_gpu_c"] for g in gpus]
    watts = [g["power_draw_mw"] / 1000 for g in gpus]
    assert len(set(temps)) >= 2 and max(temps) - min(temps) <= 8
    assert len(set(np.round(watts))) >= 3 and max(watts) - min(watts) <= 25
    assert {g["clock_sm_mhz"] for g in gpus} == {345}
    assert {g["clocks_event_reasons"] for g in gpus} == {REASON_GPU_IDLE}


def test_training_is_power_capped_and_counts_the_capping_time() -> None:
    c = cluster()
    c.attach(1, "python3", [0], phase="train", memory_plan={"train": 40000})
    run(c, 20)
    g = gpu(c, 0)
    assert g["clocks_event_reasons"] == REASON_SW_POWER_CAP
    counter = g["clocks_event_counters_us"]
    assert isinstance(counter, dict) and 18e6 <= counter["sw_power_cap"] <= 20.1e6
    assert 670_000 <= g["power_draw_mw"] <= 705_000  # type: ignore[operator]


def test_a_lower_power_limit_lowers_power_and_clocks() -> None:
    c = cluster(gpus=2)
    c.attach(1, "a", [0], phase="train")
    c.attach(2, "b", [1], phase="train")
    c.power_limit_w[1] = 400.0  # as `nvidia-smi -pl 400` would
    run(c, 15)
    full, limited = gpu(c, 0), gpu(c, 1)
    assert 380_000 <= limited["power_draw_mw"] <= 402_000  # type: ignore[operator]
    assert limited["clock_sm_mhz"] < full["clock_sm_mhz"] - 200  # type: ignore[operator]
    assert limited["power_limit_mw"] == 400_000


def test_poor_cooling_brings_thermal_slowdown() -> None:
    c = cluster(gpus=2)
    c.attach(1, "a", [0, 1], phase="train")
    c.ambient_offset_c[1] += 25.0  # a blocked air inlet
    run(c, 240, dt=0.5)
    cool, hot = gpu(c, 0), gpu(c, 1)
    assert cool["clocks_event_reasons"] == REASON_SW_POWER_CAP
    assert hot["clocks_event_reasons"] & (REASON_SW_THERMAL | REASON_HW_THERMAL)
    assert hot["temperature_gpu_c"] <= c.spec.temp_slowdown_c + 1  # type: ignore[operator]
    assert hot["power_draw_mw"] < cool["power_draw_mw"]  # type: ignore[operator]
    assert hot["clock_sm_mhz"] < cool["clock_sm_mhz"]  # type: ignore[operator]
    counters = hot["clocks_event_counters_us"]
    assert isinstance(counters, dict) and counters["sw_thermal_slowdown"] > 0


def test_energy_counter_integrates_power() -> None:
    c = cluster(gpus=1)
    c.attach(1, "a", [0], phase="train")
    run(c, 5)
    before, t0 = gpu(c, 0)["energy_mj"], c.time
    powers = []
    for _ in range(100):
        c.step(0.1)
        powers.append(gpu(c, 0)["power_draw_mw"])
    joules = (gpu(c, 0)["energy_mj"] - before) / 1000  # type: ignore[operator]
    expected = np.mean(powers) / 1000 * (c.time - t0)
    assert joules == pytest.approx(expected, rel=0.02)


def test_nvlink_moves_only_for_jobs_spanning_gpus() -> None:
    c = cluster(gpus=4)
    c.attach(1, "solo", [0], phase="train")
    c.attach(2, "rank0", [1], phase="train", job="ddp")
    c.attach(3, "rank1", [2], phase="train", job="ddp")
    run(c, 3)
    assert gpu(c, 0)["nvlink_tx_kbps"] == 0
    assert gpu(c, 1)["nvlink_tx_kbps"] > 10_000_000  # type: ignore[operator]
    assert gpu(c, 3)["nvlink_tx_kbps"] == 0


def test_barrier_spins_at_full_utilization_and_near_idle_power() -> None:
    c = cluster(gpus=1)
    c.attach(1, "rank1", [0], phase="barrier")
    run(c, 5)
    g = gpu(c, 0)
    assert g["utilization_gpu_pct"] == 100
    assert 110_000 <= g["power_draw_mw"] <= 190_000  # type: ignore[operator]


def test_two_processes_share_a_gpu() -> None:
    c = cluster(gpus=1)
    c.attach(1, "a", [0], phase="train", memory_plan={"train": 20000})
    c.attach(2, "b", [0], phase="eval", memory_plan={"eval": 10000})
    run(c, 3)
    node = c.snapshot()["nodes"][0]
    assert node["gpus"][0]["memory_used_mib"] == 30000 + DRIVER_OVERHEAD_MIB
    assert node["gpus"][0]["utilization_gpu_pct"] == 100
    assert [p["pid"] for p in node["processes"]] == [1, 2]


def test_bad_requests_are_refused_with_reasons() -> None:
    c = cluster(gpus=2)
    with pytest.raises(ClusterError, match="GPU index 5 does not exist"):
        c.attach(1, "a", [5])
    with pytest.raises(ClusterError, match="same GPU twice"):
        c.attach(1, "a", [0, 0])
    with pytest.raises(ClusterError, match="at least one GPU"):
        c.attach(1, "a", [])
    with pytest.raises(ClusterError, match="unknown phase"):
        c.attach(1, "a", [0], memory_plan={"warmup": 10})
    with pytest.raises(ClusterError, match="not attached"):
        c.set_phase(9, "train")
    with pytest.raises(ClusterError, match="does not exist"):
        c.snapshot([1])
    with pytest.raises(ValueError):
        c.step(0)


def test_a_thousand_gpus_step_together() -> None:
    c = cluster(nodes=128)
    for rank in range(0, 1024, 2):
        c.attach(10_000 + rank, "python3", [rank], phase="train", job="big")
    run(c, 3)
    snap = c.snapshot([127])
    node = snap["nodes"][0]
    assert node["hostname"] == "dgx-h100-128"
    assert [g["utilization_gpu_pct"] for g in node["gpus"]] == [100, 0] * 4
    assert len(node["processes"]) == 4


@pytest.mark.parametrize(
    ("model", "idle_clock", "cap_w"),
    [("a100-80gb", 210, 400), ("a100-pcie", 210, 300), ("h100-pcie", 345, 350), ("h200", 345, 700)],
)
def test_other_models_idle_and_train_sensibly(model: str, idle_clock: int, cap_w: int) -> None:
    c = cluster(model=model, gpus=2)
    run(c, 2)
    assert gpu(c, 0)["clock_sm_mhz"] == idle_clock
    c.attach(1, "python3", [0], phase="train")
    run(c, 90, dt=0.25)
    g = gpu(c, 0)
    assert 0.95 * cap_w * 1000 <= g["power_draw_mw"] <= 1.01 * cap_w * 1000  # type: ignore[operator]
    assert 55 <= g["temperature_gpu_c"] <= 80  # type: ignore[operator]
    assert g["clock_sm_mhz"] < c.spec.sm_clock_max_mhz
    assert g["memory_total_mib"] == c.spec.memory_total_mib


def test_same_seed_same_story() -> None:
    a, b = cluster(seed=5), cluster(seed=5)
    for c in (a, b):
        c.attach(1, "x", [0, 1], phase="train")
        run(c, 3)
    assert a.snapshot() == b.snapshot()
    other = cluster(seed=6)
    assert (
        other.snapshot()["nodes"][0]["gpus"][0]["uuid"]
        != a.snapshot()["nodes"][0]["gpus"][0]["uuid"]
    )
