"""Log styles, one module each, and the registry ``fake-train --style`` chooses from."""

from fakehw.train.styles.base import Style
from fakehw.train.styles.deepspeed import DeepSpeedStyle
from fakehw.train.styles.hf import HfStyle
from fakehw.train.styles.megatron import MegatronStyle

STYLES: dict[str, type[Style]] = {
    style.name: style for style in (Style, MegatronStyle, HfStyle, DeepSpeedStyle)
}

__all__ = ["STYLES", "Style"]
