"""Fit the thermal network of fakehw.thermal to the real H100 trace.

    python bench/calibrate_thermal.py [path/to/trace.csv]

Needs scipy (not a fakehw dependency: this is how the constants in
fakehw/thermal.py were obtained, kept so anyone can redo it). The measured
power is a 1 s average, so it is shifted by half a second to stand for the
instantaneous power that heats the die. Steady states are pinned to the
part's idle and full-load temperatures (the trace is too short to see the
slowest pole settle), then pole shares and time constants are fitted.
"""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DEFAULT_TRACE = Path(__file__).resolve().parents[1] / "tests/real/h100/load/trace.csv"


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with path.open() as handle:
        rows = list(csv.reader(handle))[1:]
    stamps = [
        datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        for r in rows
    ]
    t = np.array(stamps) - stamps[0]
    power = np.array([float(r[4]) for r in rows])
    die = np.array([float(r[2]) for r in rows])
    memory = np.array([float(r[3]) for r in rows])
    return t, power, die, memory


def simulate(params: np.ndarray, t: np.ndarray, power: np.ndarray) -> np.ndarray:
    ambient, gains, taus = params[0], params[1:4], params[4:7]
    dt = np.diff(t, prepend=t[0])
    rise = gains * power[0]
    out = np.empty_like(power)
    for k, p in enumerate(power):
        rise = gains * p + (rise - gains * p) * np.exp(-dt[k] / taus)
        out[k] = ambient + rise.sum()
    return out


def fit(
    label: str,
    t: np.ndarray,
    power: np.ndarray,
    temp: np.ndarray,
    t_idle: float,
    t_busy: float,
    p_idle: float = 71.4,
    p_busy: float = 690.0,
) -> None:
    from scipy.optimize import least_squares

    slope = (t_busy - t_idle) / (p_busy - p_idle)
    ambient = t_idle - slope * p_idle

    def full(q: np.ndarray) -> np.ndarray:
        g1, g2, tau1, tau2, tau3 = q
        return np.array([ambient, g1, g2, slope - g1 - g2, tau1, tau2, tau3])

    result = least_squares(
        lambda q: simulate(full(q), t, power) - temp,
        [0.02, 0.015, 0.3, 15.0, 200.0],
        bounds=([0, 0, 0.02, 2, 60], [0.06, 0.06, 2, 60, 600]),
    )
    params = full(result.x)
    error = simulate(params, t, power) - temp
    shares = params[1:4] / slope
    print(f"{label}: ambient {ambient:.2f} C, total {slope:.5f} C/W")
    print(f"  pole shares {tuple(round(float(s), 4) for s in shares)}")
    print(f"  pole taus   {tuple(round(float(x), 2) for x in params[4:7])} s")
    print(f"  rms {np.sqrt(np.mean(error**2)):.2f} C, max {np.abs(error).max():.2f} C")


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TRACE
    t, power, die, memory = load(path)
    instantaneous = np.interp(t + 0.5, t, power)
    fit("die", t, instantaneous, die, t_idle=40.6, t_busy=78.0)
    fit("memory", t, instantaneous, memory, t_idle=43.0, t_busy=77.5)


if __name__ == "__main__":
    main()
