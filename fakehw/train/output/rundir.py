"""The recorders of one run's output directory, laid out as its style's framework
lays it out, and the checks made before the run starts."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from fakehw.train.metrics import MetricsWriter
from fakehw.train.output.checkpoints import CheckpointStore
from fakehw.train.output.files import FileWriter
from fakehw.train.output.layouts import LAYOUTS
from fakehw.train.output.layouts.base import Layout
from fakehw.train.output.ranklogs import RankLogs
from fakehw.train.output.report import ReportWriter
from fakehw.train.output.runfile import RunFile
from fakehw.train.output.tensorboard import TensorBoardRecorder
from fakehw.train.plan import RunPlan
from fakehw.train.recorder import Recorder

RUN_FILE = "run.json"


class OutputDirError(ValueError):
    """The output directory cannot be used; the message says why."""


def check(directory: str, resume: bool) -> Path:
    """The output directory as an absolute path, refused (before the run starts
    anything) if it is a file or cannot be made, or if it holds a run already and this
    one does not resume it (nothing of the earlier run is overwritten); nothing is
    created yet."""
    root = Path(os.path.abspath(os.path.expanduser(directory)))
    if root.exists() and not root.is_dir():
        raise OutputDirError(f"--output-dir {directory}: not a directory")
    if (root / RUN_FILE).exists() and not resume:
        raise OutputDirError(
            f"--output-dir {directory} holds a run already ({RUN_FILE}): add --resume to go "
            "on from its last checkpoint, or choose another directory"
        )
    existing = root
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"--output-dir {directory}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"--output-dir {directory}: {existing} is not writable")
    return root


def prepare(directory: str, resume: bool) -> Path:
    """The output directory, made if new: absolute, writable, not a file."""
    root = check(directory, resume)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"--output-dir {directory}: {exc.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise OutputDirError(f"--output-dir {directory}: not writable")
    return root


def layout_for(plan: RunPlan, root: Path, checkpoint_name: Callable[[int], str]) -> Layout:
    return LAYOUTS[plan.style](plan, root, checkpoint_name)


def resume_point(plan: RunPlan, layout: Layout) -> int | None:
    """--resume into a directory an earlier run left: the step of its newest checkpoint
    (None: nothing to resume there). A run of another model, task or style is refused."""
    try:
        earlier = json.loads((layout.root / RUN_FILE).read_text())
    except (OSError, ValueError):
        earlier = None
    if isinstance(earlier, dict):
        config = earlier.get("config", {})
        theirs = (config.get("model"), config.get("task"), earlier.get("style"))
        ours = (plan.model.name, plan.task, plan.style)
        if theirs != ours:
            raise OutputDirError(
                f"--output-dir {layout.root} holds a {theirs[0]} {theirs[1]} run in the "
                f"{theirs[2]} style; this one is {ours[0]} {ours[1]} in the {ours[2]} style "
                "(give --model, --task and --style as the earlier run had them)"
            )
    steps = [step for step in layout.existing_steps() if step < plan.total_steps]
    return steps[-1] if steps else None


def recorders(
    layout: Layout, notify: Callable[[str], None], resume: bool = False
) -> list[Recorder]:
    """What the run writes under the layout's root: checkpoints first (their files
    exist before anything names them), then the metrics, TensorBoard, the rank logs,
    the report (it reads the finished metrics file), and run.json last (it lists the
    others' files when the run ends)."""
    files = FileWriter(layout.root, notify)
    return [
        CheckpointStore(layout, files),
        MetricsWriter(str(layout.root / "metrics.jsonl"), append=resume),
        TensorBoardRecorder(layout),
        RankLogs(layout.plan, layout),
        ReportWriter(layout, files),
        RunFile(layout.plan, layout, files),
    ]
