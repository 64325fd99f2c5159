"""Fit a GPU model's physics to a real trace and print the table its catalog entry takes.

    python bench/calibrate_thermal.py tests/real/h200/load
    python bench/calibrate_thermal.py tests/real/h100/load --pin-die 40.6,78.0 \
        --pin-memory 43.0,77.5 --memory-heat-weight 4.69

The folder holds ``trace.csv`` (``nvidia-smi --query-gpu=... -lms 100``, as in
``tests/real/``) and the run's ``train.log`` is not needed: the regimes are read off
the samples themselves (idle: clocks parked; context: clocks up, no work; capped:
busy at the power limit). Needs scipy (``pip install -e '.[calibrate]'``): this is how
the constants of ``fakehw/specs.py``'s ``H100_FIT`` and ``H200_FIT`` were obtained,
kept so that anyone can redo it or fit another part.

* Die: a three-pole Foster network driven by the instantaneous power
  (``power.draw.instant`` where the trace has it, else the 1 s average shifted by half a
  second). Free fit of ambient, gains and time constants, or with ``--pin-die
  IDLE,LOAD`` the steady states pinned at the part's idle and full-load temperatures
  (a trace too short to see its slowest pole settle).
* HBM: the same network driven by board power plus ``k`` times the memory's dynamic
  power (``--memory-span`` W at 100 % utilization.memory, from ``nvidia-smi -q``'s
  "GPU Memory Power Readings" idle and busy), ``k`` fitted unless given.
* Power: idle, context (a CUDA context, no work) and capped training, as the 1 s
  average power.draw shows them; the leakage slope from the cooling after work stops.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

FloatArray = np.ndarray


@dataclass
class Trace:
    t: FloatArray
    die: FloatArray
    memory: FloatArray
    power: FloatArray  # 1 s average, what power.draw shows
    instant: FloatArray  # what heats the die now
    util: FloatArray
    memory_util: FloatArray
    sm_mhz: FloatArray
    power_limit: FloatArray


def load(folder: Path) -> Trace:
    path = folder / "trace.csv"
    with path.open() as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader)]
        rows = list(reader)

    def column(*names: str) -> FloatArray | None:
        for name in names:
            if name in header:
                k = header.index(name)
                return np.array([float(r[k]) for r in rows])
        return None

    stamps = np.array([
        datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        for r in rows
    ])  # fmt: skip
    t = stamps - stamps[0]
    power = column("power.draw [W]")
    instant = column("power.draw.instant [W]")
    sm = column("clocks.current.sm [MHz]", "clocks.sm [MHz]")
    limit = column("power.limit [W]")
    assert power is not None and sm is not None
    return Trace(
        t=t,
        die=column("temperature.gpu"),  # type: ignore[arg-type]
        memory=column("temperature.memory"),  # type: ignore[arg-type]
        power=power,
        instant=instant if instant is not None else np.interp(t + 0.5, t, power),
        util=column("utilization.gpu [%]"),  # type: ignore[arg-type]
        memory_util=column("utilization.memory [%]") / 100.0,  # type: ignore[operator]
        sm_mhz=sm,
        power_limit=limit if limit is not None else np.full_like(power, 700.0),
    )


def foster(ambient: float, gains: FloatArray, taus: FloatArray, t: FloatArray,
           heat_w: FloatArray) -> FloatArray:  # fmt: skip
    """Temperature of a Foster network driven by ``heat_w``, held over each sample."""
    dt = np.diff(t, prepend=t[0])
    rise = gains * heat_w[0]
    out = np.empty_like(heat_w)
    for k, watts in enumerate(heat_w):
        rise = gains * watts + (rise - gains * watts) * np.exp(-dt[k] / taus)
        out[k] = ambient + rise.sum()
    return out


@dataclass
class Network:
    ambient: float
    total_c_per_w: float
    shares: tuple[float, float, float]
    taus_s: tuple[float, float, float]
    rms_c: float
    max_c: float
    weight: float = 0.0  # k: memory power's heating relative to board power


def fit_network(trace: Trace, temperature: FloatArray, heat: FloatArray,
                pin: tuple[float, float] | None, idle_w: float, load_w: float,
                memory_w: FloatArray | None = None, weight: float | None = None,
                ) -> Network:  # fmt: skip
    """Least squares over the whole run; ``memory_w`` adds k x memory power to the heat."""
    from scipy.optimize import least_squares

    fit_weight = memory_w is not None and weight is None
    extra = memory_w if memory_w is not None else np.zeros_like(heat)

    def unpack(q: FloatArray) -> tuple[float, FloatArray, FloatArray, float]:
        k = q[-1] if fit_weight else (weight or 0.0)
        if pin is None:
            return q[0], q[1:4], q[4:7], k
        busy_heat = load_w + k * float(np.mean(extra[trace.util >= 95]) if extra.any() else 0.0)
        slope = (pin[1] - pin[0]) / (busy_heat - idle_w)
        gains = np.array([q[0], q[1], slope - q[0] - q[1]])
        return pin[0] - slope * idle_w, gains, q[2:5], k

    def residual(q: FloatArray) -> FloatArray:
        ambient, gains, taus, k = unpack(q)
        return foster(ambient, gains, taus, trace.t, heat + k * extra) - temperature

    if pin is None:
        start, low, high = [35, 0.02, 0.01, 0.005, 0.3, 10, 150], [0, 0, 0, 0, 0.02, 1, 30], [
            60, 0.2, 0.2, 0.2, 3, 60, 900]  # fmt: skip
    else:
        start, low, high = [0.02, 0.015, 0.3, 15.0, 200.0], [0, 0, 0.02, 2, 60], [
            0.1, 0.1, 2, 60, 900]  # fmt: skip
    if fit_weight:
        start, low, high = [*start, 1.0], [*low, 0.0], [*high, 10.0]
    result = least_squares(residual, start, bounds=(low, high))
    ambient, gains, taus, k = unpack(result.x)
    error = residual(result.x)
    total = float(gains.sum())
    order = np.argsort(taus)
    return Network(
        ambient=float(ambient), total_c_per_w=total,
        shares=tuple(round(float(g / total), 4) for g in gains[order]),  # type: ignore[arg-type]
        taus_s=tuple(round(float(x), 2) for x in taus[order]),  # type: ignore[arg-type]
        rms_c=float(np.sqrt(np.mean(error**2))), max_c=float(np.abs(error).max()), weight=k,
    )  # fmt: skip


def regimes(trace: Trace) -> dict[str, float]:
    """Idle, context and capped power and temperatures, read off the samples."""
    top = trace.sm_mhz.max()
    idle = (trace.sm_mhz < 400) & (trace.util == 0)
    context = (trace.sm_mhz == top) & (trace.util == 0) & (trace.power < 0.3 * trace.power_limit)
    capped = (trace.util >= 95) & (trace.power > 0.9 * trace.power_limit)
    return {
        "idle power W": float(np.mean(trace.power[idle])),
        "idle die C": float(np.mean(trace.die[idle])),
        "idle HBM C": float(np.mean(trace.memory[idle])),
        "context power W": float(np.median(trace.power[context])),
        "context die C": float(np.median(trace.die[context])),
        "capped power W": float(np.mean(trace.power[capped])),
        "capped SM clock MHz": float(np.mean(trace.sm_mhz[capped])),
        "capped utilization.memory %": float(100 * np.mean(trace.memory_util[capped])),
    }


def pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        return float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IDLE,LOAD in C, got {text!r}") from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path,
                        help="a folder with trace.csv (e.g. tests/real/h200/load)")  # fmt: skip
    parser.add_argument(
        "--pin-die",
        type=pair,
        metavar="IDLE,LOAD",
        help="pin the die's steady states (C) at idle and at the cap",
    )
    parser.add_argument(
        "--pin-memory",
        type=pair,
        metavar="IDLE,LOAD",
        help="pin the HBM's steady states (C) at idle and in capped training",
    )
    parser.add_argument(
        "--memory-span",
        type=float,
        default=208.0,
        metavar="W",
        help="memory power at 100 %% utilization.memory over its idle (H200: "
        "37.4 W idle, 125.0 W at 42 %%: 208 W; H100: 157 W)",
    )
    parser.add_argument(
        "--memory-heat-weight",
        type=float,
        metavar="K",
        help="fix k instead of fitting it (a trace without a memory-bound phase "
        "cannot separate it)",
    )
    args = parser.parse_args(argv)
    if not (args.folder / "trace.csv").is_file():
        parser.error(f"{args.folder}/trace.csv does not exist")
    trace = load(args.folder)
    seen = regimes(trace)
    die = fit_network(trace, trace.die, trace.instant, args.pin_die, seen["idle power W"],
                      seen["capped power W"])  # fmt: skip
    memory = fit_network(trace, trace.memory, trace.instant, args.pin_memory,
                         seen["idle power W"], seen["capped power W"],
                         memory_w=args.memory_span * trace.memory_util,
                         weight=args.memory_heat_weight)  # fmt: skip
    print(f"# {args.folder}: {len(trace.t)} samples over {trace.t[-1]:.0f} s\n")
    print("| quantity | value |\n|---|---|")
    for name, value in seen.items():
        print(f"| {name} | {value:.1f} |")
    for label, net in (("die", die), ("HBM", memory)):
        print(f"| {label} ambient C | {net.ambient:.2f} |")
        print(f"| {label} total C/W | {net.total_c_per_w:.5f} |")
        print(f"| {label} pole shares | {net.shares} |")
        print(f"| {label} pole taus s | {net.taus_s} |")
        print(f"| {label} fit RMS / max C | {net.rms_c:.2f} / {net.max_c:.2f} |")
    print(f"| HBM heat weight k | {memory.weight:.3f} |")
    steady = die.ambient + die.total_c_per_w * seen["capped power W"]
    print(f"| die steady state at the cap C | {steady:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
