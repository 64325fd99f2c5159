"""Power and temperature physics: pure functions of numpy arrays and a time step.

Nothing here keeps state or knows about processes, phases or rendering; the
cluster in ``fakehw.devices`` owns the arrays and calls these each tick.

The model; its numbers are each GPU model's (``fakehw.specs``: ``ThermalFit`` and the
calibration figures), fitted on the real H100 and H200 traces
(``tests/real/h100/load/``, ``tests/real/h200/load/``) with ``bench/calibrate_thermal.py``:

* **Power.** ``static_power_w`` is what the board burns with no work: the idle
  figure with clocks parked, or idle plus a CUDA context's extra with clocks
  raised, each growing with die temperature (leakage: 0.4 W/C parked and
  0.9 W/C boosted on an H100, read from the cooling tails of the trace).
  ``dynamic_power_w`` is the work on top: demand (activity x intensity x the
  model's full-load dynamic power) times a clock factor ``f * V(f)^2`` with the
  voltage rising linearly from 65 % at the idle clock to 100 % at the maximum.
* **Power cap.** ``capped_clock_mhz`` picks the highest clock step whose power
  fits under the target; the firmware does it with the previous sample's
  demand, so instantaneous power scatters around the cap while the 1 s average
  that nvidia-smi shows holds ~690 W against a 700 W cap, with the SM clock
  wandering 1530-1935 MHz as on the real trace.
* **Temperature.** A Foster network: die temperature is ambient plus three
  first-order responses to power (on the H100: 0.21 s, the die itself; 9.6 s, the
  heat spreader; 180 s, heatsink and air; the H200 host's cold plates leave only
  the first two). Steady states are fixed at the part's idle and full-load
  temperatures. HBM temperature is a second network, driven by the board's power
  plus a weight times the memory's own dynamic power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fakehw.specs import GpuSpec

FloatArray = npt.NDArray[np.float64]

VOLTAGE_AT_IDLE_CLOCK = 0.65
# Firmware steers a little under the limit; with clocks moving in whole steps
# the 1 s average lands ~691 W under a 700 W cap, as on the trace.
CAP_HEADROOM_FRACTION = 0.008
# Power at which the part settles at its ``load_temp_c`` (running at the cap).
LOAD_POWER_FRACTION = 0.99


@dataclass(frozen=True)
class ThermalCoefficients:
    """A GPU model's physics constants, derived from its catalog entry."""

    ambient_die_c: float
    ambient_memory_c: float
    die_gains_c_per_w: tuple[float, float, float]
    memory_gains_c_per_w: tuple[float, float, float]
    die_taus_s: tuple[float, float, float]
    memory_taus_s: tuple[float, float, float]
    memory_heat_weight: float  # HBM heating per W of memory power, per W of board power
    leak_parked_w_per_c: float
    leak_boosted_w_per_c: float

    @classmethod
    def for_spec(cls, spec: GpuSpec, training_memory_activity: float) -> ThermalCoefficients:
        """The coefficients of ``spec``; ``training_memory_activity`` is its
        utilization.memory in the capped training its load temperatures stand for."""
        fit = spec.thermal_fit
        load_power = spec.power_default_w * LOAD_POWER_FRACTION
        span_w = load_power - spec.idle_power_w
        die_slope = (spec.load_temp_c - spec.idle_temp_c) / span_w
        training_memory_w = float(memory_dynamic_power_w(spec, training_memory_activity, 1.0))
        memory_span_w = span_w + fit.memory_heat_weight * training_memory_w
        mem_slope = (spec.load_memory_temp_c - spec.idle_memory_temp_c) / memory_span_w
        scale = spec.power_default_w / fit.reference_tdp_w
        return cls(
            ambient_die_c=spec.idle_temp_c - die_slope * spec.idle_power_w,
            ambient_memory_c=spec.idle_memory_temp_c - mem_slope * spec.idle_power_w,
            die_gains_c_per_w=_split(die_slope, fit.die_pole_shares),
            memory_gains_c_per_w=_split(mem_slope, fit.memory_pole_shares),
            die_taus_s=fit.die_pole_taus_s,
            memory_taus_s=fit.memory_pole_taus_s,
            memory_heat_weight=fit.memory_heat_weight,
            leak_parked_w_per_c=fit.leak_parked_w_per_c * scale,
            leak_boosted_w_per_c=fit.leak_boosted_w_per_c * scale,
        )


def _split(total: float, shares: tuple[float, float, float]) -> tuple[float, float, float]:
    return (total * shares[0], total * shares[1], total * shares[2])


def memory_dynamic_power_w(spec: GpuSpec, memory_activity: FloatArray | float,
                           clock_share: FloatArray | float) -> FloatArray:  # fmt: skip
    """The memory's power over its idle figure: the bytes it moves, as a share of what
    it moves at full bandwidth (``memory_activity`` at ``clock_share`` of its clock)."""
    span_w = spec.memory_power_max_w - spec.memory_power_idle_w
    result: FloatArray = span_w * np.asarray(memory_activity) * np.asarray(clock_share)
    return result


def memory_heat_w(board_power_w: FloatArray, memory_dynamic_w: FloatArray,
                  coefficients: ThermalCoefficients) -> FloatArray:  # fmt: skip
    """What drives the HBM's network: the board's power and, weighted, the memory's own."""
    result: FloatArray = board_power_w + coefficients.memory_heat_weight * memory_dynamic_w
    return result


def pole_decay(taus_s: tuple[float, ...], dt_s: float) -> FloatArray:
    """Per-pole factor exp(-dt/tau) as a column, to broadcast over GPUs."""
    return np.array([math.exp(-dt_s / tau) for tau in taus_s], dtype=np.float64)[:, None]


def foster_step(
    node_rise_c: FloatArray,
    power_w: FloatArray,
    gains_c_per_w: FloatArray,
    decay: FloatArray,
) -> FloatArray:
    """Advance a Foster network one step with power held over the step.

    ``node_rise_c`` is (poles, gpus): each pole's rise over ambient. Exact for a
    piecewise-constant input, so any ``dt`` gives the same curve.
    """
    target = gains_c_per_w * power_w[None, :]
    return target + (node_rise_c - target) * decay


def steady_rise_c(power_w: FloatArray, gains_c_per_w: FloatArray) -> FloatArray:
    """Pole rises in equilibrium with a constant power (to start a cluster)."""
    return gains_c_per_w * power_w[None, :]


def static_power_w(
    die_temp_c: FloatArray,
    has_context: npt.NDArray[np.bool_],
    idle_power_w: FloatArray,
    context_extra_w: FloatArray,
    reference_temp_c: float,
    coefficients: ThermalCoefficients,
) -> FloatArray:
    """Board power without work: parked or boosted clocks, plus leakage."""
    above = die_temp_c - reference_temp_c
    parked = idle_power_w + coefficients.leak_parked_w_per_c * above
    boosted = idle_power_w + context_extra_w + coefficients.leak_boosted_w_per_c * above
    return np.where(has_context, boosted, parked)


def clock_factor(clock_mhz: FloatArray, spec: GpuSpec) -> FloatArray:
    """Dynamic power at ``clock_mhz`` relative to the maximum clock: f * V(f)^2."""
    f_max = float(spec.sm_clock_max_mhz)
    f_idle = float(spec.sm_clock_idle_mhz)
    position = np.minimum(np.maximum((clock_mhz - f_idle) / (f_max - f_idle), 0.0), 1.0)
    voltage = VOLTAGE_AT_IDLE_CLOCK + (1.0 - VOLTAGE_AT_IDLE_CLOCK) * position
    result: FloatArray = (clock_mhz / f_max) * voltage * voltage
    return result


def dynamic_power_w(demand_w: FloatArray, clock_mhz: FloatArray, spec: GpuSpec) -> FloatArray:
    """Power of the work itself; ``demand_w`` is its draw at the maximum clock."""
    result: FloatArray = demand_w * clock_factor(clock_mhz, spec)
    return result


class ClockTable:
    """The clock steps of a model and their power factors, for inverse lookups."""

    def __init__(self, spec: GpuSpec) -> None:
        self.spec = spec
        self.clocks_mhz = np.arange(
            spec.sm_clock_idle_mhz,
            spec.sm_clock_max_mhz + 1,
            spec.clock_step_mhz,
            dtype=np.float64,
        )
        if self.clocks_mhz[-1] != spec.sm_clock_max_mhz:
            self.clocks_mhz = np.append(self.clocks_mhz, float(spec.sm_clock_max_mhz))
        self.factors = clock_factor(self.clocks_mhz, spec)

    def highest_clock_within(self, factor_budget: FloatArray) -> FloatArray:
        """Highest clock step whose power factor does not exceed the budget."""
        index = np.searchsorted(self.factors, factor_budget, side="right") - 1
        index = np.minimum(np.maximum(index, 0), len(self.clocks_mhz) - 1)
        result: FloatArray = self.clocks_mhz[index]
        return result


def capped_clock_mhz(
    table: ClockTable,
    target_w: FloatArray,
    static_w: FloatArray,
    demand_w: FloatArray,
    ceiling_mhz: FloatArray,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Clock the power controller picks, and whether the cap is what limited it.

    ``demand_w`` is the work's draw at the maximum clock as the controller last
    saw it; ``ceiling_mhz`` is the clock allowed by everything else (a context
    boosts to the maximum, thermal slowdown and power brake lower it).
    """
    safe_demand = np.maximum(demand_w, 1e-6)
    budget = (target_w - static_w) / safe_demand
    capped = table.highest_clock_within(budget)
    limited_by_cap = capped < ceiling_mhz
    return np.minimum(capped, ceiling_mhz), limited_by_cap


def cap_target_w(power_limit_w: FloatArray) -> FloatArray:
    """The 1 s average power the firmware steers to under a given limit."""
    result: FloatArray = power_limit_w * (1.0 - CAP_HEADROOM_FRACTION)
    return result
