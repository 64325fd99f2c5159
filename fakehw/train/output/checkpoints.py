"""The checkpoint directories a run leaves: each save's files as its framework names
them (weights with their safetensors headers and sparse data, optimizer states sparse,
the trainer's small files with their real contents), the pointers beside them
(``latest``, ``best``), and retention: older checkpoints deleted as the framework does
(``fakehw.train.output.layouts``). Exports are written the same way."""

from __future__ import annotations

from pathlib import Path

from fakehw.train.events import CheckpointInfo, EvalResult, ExportArtifact, StepMetrics, Summary
from fakehw.train.gguf import gguf_file
from fakehw.train.output import hfconfig
from fakehw.train.output.files import FileWriter
from fakehw.train.output.layouts.base import Layout
from fakehw.train.recorder import Files, Recorder
from fakehw.train.styles.base import adapter_config, weights


class CheckpointStore(Recorder):
    def __init__(self, layout: Layout, files: FileWriter) -> None:
        self.layout = layout
        self.files = files
        self.on_disk: list[int] = []  # the steps of the checkpoints kept, oldest first

    def step(self, m: StepMetrics) -> None:
        self.layout.observe_step(m)

    def eval(self, r: EvalResult) -> None:
        if not r.final:
            self.layout.observe_eval(r)

    def training_ended(self, s: Summary) -> None:
        self.layout.observe_final(s)

    def checkpoint_started(self, step: int, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)

    def write_checkpoint(self, step: int, path: str, files: Files) -> Files:
        """The save's files, once its time has passed: a save given up half-way (Ctrl-C
        twice) leaves its directory as the log says, incomplete."""
        self.layout.saved(step)  # is it the best? (its trainer state says so)
        return self._write(Path(path), files, self.layout.state_files(step))

    def _write(self, directory: Path, files: Files, contents: dict[str, bytes]) -> Files:
        """Files of a save or an export: the weights' headers, PEFT's config, ``contents``."""
        plan = self.layout.plan
        weight_files = weights(plan)
        contents = {**weight_files.contents, **contents}
        if plan.lora:
            contents["adapter_config.json"] = adapter_config(plan)
        return self.files.write_files(directory, files, contents, weight_files.heads)

    def checkpoint(self, c: CheckpointInfo) -> list[str]:
        if c.step in self.on_disk:
            self.on_disk.remove(c.step)
        self.on_disk.append(c.step)
        self.layout.point(c.step)
        removed = []
        for step in self.layout.retention(self.on_disk):
            path = str(self.layout.checkpoints / self.layout.checkpoint_name(step))
            self.files.remove_tree(Path(path))
            self.on_disk.remove(step)
            removed.append(path)
        return removed

    def resumed(self, step: int, path: str, files: Files) -> None:
        """The checkpoint a resumed run loads: the one an earlier run left in the output
        directory (its trainer state read back), or, in a new directory, written as the
        earlier run would have left it. Checkpoints already there count for retention."""
        directory = Path(path)
        if directory.is_dir():
            self.layout.load_state(directory)
        else:
            self._write(directory, files, self.layout.state_files(step))
        self.on_disk = sorted(set(self.layout.existing_steps()) | {step})
        self.layout.point(step)

    def export(self, a: ExportArtifact) -> None:
        if a.format == "safetensors":  # save_pretrained's files: weights and configs
            self._write(
                Path(a.path), list(a.files), hfconfig.model_files(self.layout.plan.model.arch)
            )
        elif a.format == "gguf":  # llama.cpp's file: its header, the tensor data sparse
            plan = self.layout.plan
            gguf = gguf_file(plan.model.arch, plan.model.name, a.detail)
            heads = {name: gguf.header for name, _ in a.files}
            self.files.write_files(Path(a.path), list(a.files), {}, heads)
        else:  # quantized safetensors: sparse
            self.files.write_files(Path(a.path), list(a.files), {})
