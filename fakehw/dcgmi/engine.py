"""The host engine dcgmi talks to: the fakehw daemon's node ``FAKEHW_NODE`` (started
when none runs, as the other viewers start it), its GPUs as DCGM subjects, and the
health watches it keeps. Connection failures come out in dcgmi's words."""

from __future__ import annotations

import contextlib

from fakehw import TYPE_CHECKING
from fakehw.dcgm.values import Subject
from fakehw.dcgmi import status
from fakehw.views.source import DaemonSource, SourceFailed

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fakehw.contract.snapshot import NodeRecord, Snapshot

DEFAULT_HOST = "localhost"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_PORT = "5555"  # nv-hostengine's


def connection_failed(host: str, reason: str | None = None) -> status.DcgmiError:
    """``Command::Connect`` failing, then ``DoExecuteConnectionFailure`` (stdout, 235);
    ``reason``: why fakehw's daemon did not answer, for stderr."""
    invalid = status.ERROR_STRINGS[status.CONNECTION_NOT_VALID]
    return status.DcgmiError(
        [
            f"Error: unable to establish a connection to the specified host: {host}",
            f"Error: Unable to connect to host engine. {invalid}.",
        ],
        status.CONNECTION_NOT_VALID,
        note=reason,
    )


def is_local(host: str) -> bool:
    """``--host`` naming this machine's host engine (``localhost``, ``127.0.0.1:5555``,
    ``[::1]``, a ``unix://`` socket): the only one fakehw runs. Any other host, or
    another port, has no host engine to answer."""
    if host.startswith("unix://"):
        return True
    name, port = host, ""
    if name.startswith("["):
        name, _, rest = name[1:].partition("]")
        port = rest.removeprefix(":")
    elif name.count(":") == 1:
        name, _, port = name.partition(":")
    return name in LOCAL_HOSTS and port in ("", DEFAULT_PORT)


class HostEngine:
    """One connected dcgmi: the node's snapshot and its health watches."""

    def __init__(self, host: str = DEFAULT_HOST) -> None:
        self.host = host
        if not is_local(host):
            raise connection_failed(host)
        with self._answering():
            self.source = DaemonSource("fake-dcgmi")

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """The daemon not answering, in dcgmi's words (and fakehw's reason)."""
        try:
            yield
        except SourceFailed as exc:
            raise connection_failed(self.host, exc.message) from None

    def snapshot(self) -> Snapshot:
        with self._answering():
            return self.source.snapshot()

    def health_watches(self, mask: int | None = None) -> int:
        """The node's health watch mask, after setting it to ``mask`` if given."""
        args: dict[str, int | str] = {"node": self.source.node}
        if mask is not None:
            args["mask"] = mask
        with self._answering():
            answer = self.source.change("health_watches", **args)
        return int(answer["mask"])

    def close(self) -> None:
        self.source.close()


def node_of(snapshot: Snapshot) -> NodeRecord:
    return snapshot["nodes"][0]


class EntityListError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def gpu_ids(entity_list: str) -> list[int]:
    """``-i 0,gpu:2``: the GPU ids an entity list names, or the words of DCGM's
    ``EntityListParser`` for one it cannot read (each command says them its own way)."""
    ids = []
    for position, token in enumerate(entity_list.split(","), start=1):
        if not token:
            raise EntityListError(
                f"Error: Comma without a value detected at token {position} of input {entity_list}"
            )
        token = token.strip().removeprefix("gpu:")
        if not token.isdigit():
            raise EntityListError(f"Error: Expected numerical entityId instead of {token}")
        ids.append(int(token))
    return ids


def by_index(found: list[Subject]) -> dict[int, Subject]:
    return {int(subject.gpu["index"]): subject for subject in found}


def subjects(snapshot: Snapshot) -> list[Subject]:
    """The node's GPUs, by GPU id (DCGM numbers them as NVML does here)."""
    node = node_of(snapshot)
    count = len(node["gpus"])
    return [
        Subject(gpu, snapshot["models"][gpu["model"]], snapshot, count)
        for gpu in sorted(node["gpus"], key=lambda g: g["index"])
    ]
