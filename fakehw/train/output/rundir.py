"""The recorders of one run's output directory, laid out as its style's framework
lays it out, and the checks made before the run starts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from fakehw.train.metrics import MetricsWriter
from fakehw.train.output.checkpoints import CheckpointStore
from fakehw.train.output.files import FileWriter
from fakehw.train.output.layouts import LAYOUTS
from fakehw.train.output.layouts.base import Layout
from fakehw.train.output.ranklogs import RankLogs
from fakehw.train.output.runfile import RunFile
from fakehw.train.output.tensorboard import TensorBoardRecorder
from fakehw.train.plan import RunPlan
from fakehw.train.recorder import Recorder


class OutputDirError(ValueError):
    """The output directory cannot be used; the message says why."""


def check(directory: str) -> Path:
    """The output directory as an absolute path, refused (before the run starts
    anything) if it is a file or cannot be made; nothing is created yet."""
    root = Path(os.path.abspath(os.path.expanduser(directory)))
    if root.exists() and not root.is_dir():
        raise OutputDirError(f"--output-dir {directory}: not a directory")
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"--output-dir {directory}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"--output-dir {directory}: {existing} is not writable")
    return root


def prepare(directory: str) -> Path:
    """The output directory, made if new: absolute, writable, not a file."""
    root = check(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"--output-dir {directory}: {exc.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise OutputDirError(f"--output-dir {directory}: not writable")
    return root


def layout_for(plan: RunPlan, root: Path, checkpoint_name: Callable[[int], str]) -> Layout:
    return LAYOUTS[plan.style](plan, root, checkpoint_name)


def recorders(layout: Layout, notify: Callable[[str], None]) -> list[Recorder]:
    """What the run writes under the layout's root: checkpoints first (their files
    exist before anything names them), then the metrics, TensorBoard, the rank logs,
    and run.json last (it lists the others' files when the run ends)."""
    files = FileWriter(layout.root, notify)
    return [
        CheckpointStore(layout, files),
        MetricsWriter(str(layout.root / "metrics.jsonl")),
        TensorBoardRecorder(layout),
        RankLogs(layout.plan, layout),
        RunFile(layout.plan, layout, files),
    ]
