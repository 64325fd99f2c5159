"""Each framework's layout of a run's output directory, by style name (the style of
the same name prints what its framework logs; its layout writes what it leaves)."""

from __future__ import annotations

from fakehw.train.output.layouts.base import Layout
from fakehw.train.output.layouts.deepspeed import DeepSpeedLayout
from fakehw.train.output.layouts.hf import HfLayout
from fakehw.train.output.layouts.megatron import MegatronLayout

LAYOUTS: dict[str, type[Layout]] = {
    "default": Layout,
    "hf": HfLayout,
    "megatron": MegatronLayout,
    "deepspeed": DeepSpeedLayout,
}
