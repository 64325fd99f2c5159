"""Where fake-nvitop's screens come from: the daemon's node, filtered as the command
line asks, with the host's view of each GPU process, read at one moment (a ``Frame``)."""

from __future__ import annotations

import argparse
import getpass
import os

from fakehw import TYPE_CHECKING
from fakehw.nvitop import view
from fakehw.views.procinfo import HostProcess, HostProcesses

if TYPE_CHECKING:
    from fakehw.contract.snapshot import ClusterSummary, NodeRecord, ProcessRecord, Snapshot
    from fakehw.views.source import SourceFailed


class NvmlError(Exception):
    """What nvitop reports as ``NVML ERROR: ...`` (exit 1)."""


def _nvml_error(exc: SourceFailed) -> NvmlError:
    return NvmlError(f"Unknown Error ({exc})" if exc.unavailable else exc.message)


class Source:
    """The node this view shows (``fakehw.views.source``, failures in NVML's words) and
    psutil's view of the GPU processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        from fakehw.views.source import DaemonSource, SourceFailed

        self.args = args
        self.procs = HostProcesses()
        try:
            self.daemon = DaemonSource("fake-nvitop")  # the monitor survives restarts
        except SourceFailed as exc:
            raise NvmlError(f"Driver Not Loaded ({exc})") from None

    def snapshot(self) -> Snapshot:
        """The node this view shows."""
        from fakehw.views.source import SourceFailed

        try:
            return self.daemon.snapshot()
        except SourceFailed as exc:
            raise _nvml_error(exc) from None

    def summary(self) -> ClusterSummary:
        """A few figures of every GPU of the cluster (the grid's), at any size."""
        from fakehw.views.source import SourceFailed

        try:
            return self.daemon.summary()
        except SourceFailed as exc:
            raise _nvml_error(exc) from None

    def frame(self) -> Frame:
        snapshot = self.snapshot()
        node = snapshot["nodes"][0]
        if self.args.only:
            node = {**node, "gpus": [g for g in node["gpus"] if g["index"] in self.args.only]}
        shown = [r for r in node["processes"] if self._wanted(r)]
        node = {**node, "processes": shown}
        hosts = {r["pid"]: self.procs.lookup(r) for r in shown}
        self.procs.forget_others(set(hosts))
        if self.args.real_host:
            figures = view.HostFigures.of_this_machine()
            hostname = os.uname().nodename
        else:
            figures = view.HostFigures.of_node(node, snapshot["time"])
            hostname = node["hostname"]
        return Frame(snapshot, node, hosts, figures, (getpass.getuser(), hostname))

    def _wanted(self, process: ProcessRecord) -> bool:
        args = self.args
        if args.only and process["gpu_index"] not in args.only:
            return False
        if (args.graphics or args.only_graphics) and "G" not in process["type"]:
            return False
        if args.user is not None and process["user"] not in (set(args.user) or {getpass.getuser()}):
            return False
        return not (args.pid is not None and process["pid"] not in args.pid)


class Frame:
    """Everything one screen shows, read at one moment."""

    def __init__(
        self, snapshot: Snapshot, node: NodeRecord, hosts: dict[int, HostProcess],
        figures: view.HostFigures, user_context: tuple[str, str],
    ) -> None:  # fmt: skip
        self.snapshot = snapshot
        self.node = node
        self.hosts = hosts
        self.figures = figures
        self.user_context = user_context

    def rows(self, order: str = "natural", reverse: bool = False) -> list[view.ProcessRow]:
        return view.process_rows(self.node, self.snapshot, self.hosts, order, reverse)
