"""The one way a viewer reads the daemon: the node ``FAKEHW_NODE`` names, over a client
that starts the daemon when none runs and carries on through its restarts.

Every failure comes out as one exception, ``SourceFailed``, which says whether a
daemon could be reached at all (``unavailable``: what the real tools call the driver
not loaded) or answered with a refusal (``code``: ``not_found`` when ``FAKEHW_NODE``
names no node). Each viewer words it as the tool it imitates does, and nothing else
of the client reaches it.
"""

from __future__ import annotations

from fakehw import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from fakehw.contract.snapshot import ClusterSummary, Snapshot
    from fakehw.service.client import ResilientClient


class SourceFailed(Exception):
    """The daemon could not be reached (``unavailable``) or refused (``code``)."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code  # the daemon's error code; None: no daemon could be reached

    @property
    def unavailable(self) -> bool:
        return self.code is None


class DaemonSource:
    """Snapshots of one node (``node``) of the daemon, for the viewer ``client_name``."""

    def __init__(self, client_name: str) -> None:
        from fakehw.service.client import DaemonUnavailable, ResilientClient, node_from_env

        self.node: int | str = node_from_env()
        try:
            self.client: ResilientClient = ResilientClient(client_name)
        except DaemonUnavailable as exc:
            raise SourceFailed(str(exc)) from None

    def snapshot(self, detail: bool = False) -> Snapshot:
        """The node now (``detail``: with its sample buffers)."""
        with _failures():
            return self.client.snapshot(self.node, detail)

    def summary(self) -> ClusterSummary:
        """A few figures of every GPU of the cluster, at any size."""
        with _failures():
            result: ClusterSummary = self.client.request("summary")
            return result

    def change(self, op: str, **args: Any) -> Any:
        """A request that changes the model (an NVML setter's), its result."""
        with _failures():
            return self.client.request(op, **args)

    def subscribe(self, interval_ms: int, detail: bool = False) -> Iterator[Snapshot]:
        """Snapshots of the node the daemon pushes every ``interval_ms``."""
        with _failures():
            yield from self.client.subscribe(interval_ms, self.node, detail)

    def close(self) -> None:
        self.client.close()


class _failures:
    """Turns the client's errors into ``SourceFailed`` (a class, not contextlib's
    decorator: the viewers' start-up does not import contextlib)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: object) -> None:  # fmt: skip
        from fakehw.service.client import DaemonUnavailable, RequestFailed

        if isinstance(error, RequestFailed):
            raise SourceFailed(error.message, code=error.code) from None
        if isinstance(error, DaemonUnavailable):
            raise SourceFailed(str(error)) from None
