"""dcgm-exporter's counters files (its ``--collectors``): which fields are served, as
what Prometheus type, with what help text. ``CSV`` lines ``FIELD, type, help``; ``#``
starts a comment; the type is ``gauge``, ``counter`` or ``label`` (a static field shown
as a label on every metric). A field fakehw does not answer is refused, as
dcgm-exporter refuses a field DCGM does not know."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fakehw.dcgm.fields import FIELDS, LABEL_FIELDS

DEFAULT_COUNTERS = Path(__file__).parent / "data" / "default-counters.csv"
TYPES = ("gauge", "counter", "label")


class CountersError(ValueError):
    """A counters file that cannot be used, with the file, the line and why."""


@dataclass(frozen=True)
class Counter:
    field: str  # DCGM_FI_DEV_GPU_TEMP
    kind: str  # gauge, counter or label
    help: str


def parse(text: str, source: str) -> tuple[Counter, ...]:
    counters: list[Counter] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(",", 2)]
        if len(parts) != 3:
            raise CountersError(f"{source}:{number}: expected 'DCGM FIELD, type, help', got "
                                f"{raw.strip()!r}")  # fmt: skip
        name, kind, help_text = parts
        if kind not in TYPES:
            raise CountersError(f"{source}:{number}: type {kind!r} of {name} is not one of "
                                f"{', '.join(TYPES)}")  # fmt: skip
        known = LABEL_FIELDS if kind == "label" else tuple(FIELDS)
        if name not in known:
            raise CountersError(f"{source}:{number}: {name} is not a field fakehw answers as a "
                                f"{kind} (it answers: {', '.join(known)})")  # fmt: skip
        if any(c.field == name for c in counters):
            raise CountersError(f"{source}:{number}: {name} is listed twice")
        counters.append(Counter(name, kind, help_text))
    if not any(c.kind != "label" for c in counters):
        raise CountersError(f"{source}: no metric to serve (every line is a comment or a label)")
    return tuple(counters)


def load(path: Path | None = None) -> tuple[Counter, ...]:
    """The counters of ``path`` (the default file without one)."""
    chosen = path or DEFAULT_COUNTERS
    try:
        text = chosen.read_text(encoding="utf-8")
    except OSError as exc:
        raise CountersError(f"cannot read counters file {chosen}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CountersError(f"counters file {chosen} is not UTF-8 text") from None
    return parse(text, str(chosen))
