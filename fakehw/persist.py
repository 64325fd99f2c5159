"""What of the cluster outlives its daemon, and the file that holds it.

A restarted daemon carries on where the last one stopped: the counters a client
has seen (energy, ECC, XIDs, NVLink bytes, clock-event times) never go back, the
dies are as hot as they were, injected faults are still there, and the processes
still attached hold what they held. The file is an ``.npz`` (numpy's zip of
arrays, no pickles) with the non-array part as JSON in its ``__meta__`` entry.
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from fakehw.processes import ClusterError

if TYPE_CHECKING:
    from fakehw.devices import Cluster

# The arrays a state must have, of the cluster's shapes, for it to restore.
PERSISTED = ("energy_j", "die_rise_c", "memory_rise_c", "ecc_volatile", "ecc_uncorrected",
             "xid_count", "last_xid", "fault_heat_w", "fault_brake", "lost", "counters_us",
             "nvlink_kib_total", "power_limit_w", "power_w")  # fmt: skip
# Restored when saved (a state saved by an older fakehw restores without them): the
# counters a reset moves between volatile and aggregate, and the last readings, so
# that the first snapshot after a restart is the last one before it.
READINGS = ("ecc_history", "ecc_uncorrected_volatile",
            "sm_clock_mhz", "demand_seen_w", "activity", "memory_activity",
            "util_gpu_pct", "util_mem_pct", "util_window_s", "util_gpu_acc", "util_mem_acc",
            "clocks_event_reasons", "hw_slowdown", "pcie_kbps", "nvlink_kbps",
            "persistence_mode")  # fmt: skip


class StateUnreadable(ValueError):
    """A saved state that cannot be read (corrupt, truncated, not ours)."""


def state_of(cluster: Cluster) -> dict[str, Any]:
    """What must outlive the daemon: counters, heat, errors, faults, processes."""
    arrays = {name: np.array(getattr(cluster, name), copy=True) for name in (*PERSISTED, *READINGS)}
    slots = cluster.slots
    rows: dict[int, list[int]] = {}  # pid -> its slots, in one pass over the table
    for row, pid in enumerate(slots.pid.tolist()):
        rows.setdefault(pid, []).append(row)
    used, target = slots.used_mib.tolist(), slots.target_mib.tolist()
    processes = [
        {"pid": p.pid, "name": p.name, "gpus": list(p.gpus), "user": p.user,
         "watch_pid": p.watch_pid, "watch_started": p.watch_started,
         "memory_plan": p.memory_plan, "job": p.job, "phase": p.phase,
         "cycle_s": p.cycle_s, "intensity": p.intensity_scale,
         "used_mib": [used[r] for r in rows.get(p.pid, [])],
         "target_mib": [target[r] for r in rows.get(p.pid, [])]}
        for p in cluster.processes.values()
    ]  # fmt: skip
    return {"time": cluster.time, "config": cluster.config.to_json(), "arrays": arrays,
            "processes": processes}  # fmt: skip


def restore(cluster: Cluster, state: Mapping[str, Any]) -> bool:
    """Carry ``cluster`` on from a saved state of the same cluster; False if it does not
    fit (another configuration, or arrays of other shapes), and then nothing changed."""
    if state.get("config") != cluster.config.to_json():
        return False
    arrays = state.get("arrays", {})
    for name in PERSISTED:
        saved = arrays.get(name)
        if saved is None or np.shape(saved) != np.shape(getattr(cluster, name)):
            return False
    for name in (*PERSISTED, *READINGS):
        saved = arrays.get(name)
        current = getattr(cluster, name)
        if saved is not None and np.shape(saved) == np.shape(current):
            setattr(cluster, name, np.array(saved, dtype=current.dtype))
    cluster.resume_at(float(state.get("time", cluster.time)))
    # The processes carry on where they were (the caller drops those whose
    # watched process died meanwhile): the GPUs do not idle through a restart.
    for saved in state.get("processes", []):
        with contextlib.suppress(ClusterError, KeyError, TypeError, ValueError):
            _reattach(cluster, saved)
    cluster.readings_restored()
    return True


def _reattach(cluster: Cluster, saved: Mapping[str, Any]) -> None:
    """Attach a saved process again, holding what it held (checked as any attach)."""
    pid = saved["pid"]
    cluster.attach(
        pid, saved["name"], saved["gpus"], user=saved["user"],
        watch_pid=saved["watch_pid"], watch_started=saved.get("watch_started"),
        memory_plan=saved["memory_plan"], phase="context", job=saved["job"],
    )  # fmt: skip
    try:
        cluster.set_phase(pid, saved["phase"], cycle_s=saved["cycle_s"],
                          intensity=saved["intensity"])  # fmt: skip
        cluster.table.restore_holdings(pid, saved.get("target_mib", []), saved.get("used_mib", []))
    except (ClusterError, KeyError, TypeError, ValueError):
        cluster.detach(pid)
        raise


def write(state: Mapping[str, Any], handle: IO[bytes]) -> None:
    """``state`` (from :func:`state_of`) as an ``.npz`` file on ``handle``."""
    meta = json.dumps({"time": state["time"], "config": state["config"],
                       "processes": state["processes"]}).encode()  # fmt: skip
    np.savez(handle, __meta__=np.frombuffer(meta, dtype=np.uint8), **state["arrays"])


def read(path: str) -> dict[str, Any]:
    """The state saved in ``path``; ``StateUnreadable`` if it is not a fakehw state."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            arrays = {name: data[name] for name in data.files if name != "__meta__"}
    except OSError as exc:
        raise StateUnreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise StateUnreadable(f"{path} is not a fakehw state file ({exc})") from None
    if not isinstance(meta, dict):
        raise StateUnreadable(f"{path} is not a fakehw state file")
    return {**meta, "arrays": arrays}
