"""Cluster and daemon settings: defaults, the config file, and validation.

The config file is TOML, found at ``$FAKEHW_CONFIG`` or
``$XDG_CONFIG_HOME/fakehw/config.toml`` (``~/.config/fakehw/config.toml``)::

    [cluster]
    gpu_model = "h100"          # exact nvidia-smi name or alias (fakehw models)
    nodes = 1
    gpus_per_node = 8
    hostname_prefix = "dgx-h100-"
    seed = 0

    [daemon]
    idle_timeout_s = 600        # exit after this long with no client and no process
    tick_hz = 10
    tcp_listen = ""             # "[HOST:]PORT" serves read-only views over TCP (off if empty)
    tcp_token_file = ""         # token TCP clients must present (default RUNTIME_DIR/tcp.token)

    [train]
    output_dir = ""             # fake-train --output-dir's default ("" = write nothing)

Command-line flags override the file; the file overrides the defaults.
No numpy here: viewers read the config to start a daemon.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from fakehw.contract import tcpaddress
from fakehw.specs import DEFAULT_MODEL, GpuSpec, UnknownGpuModel, lookup

MAX_GPUS = 65536
MAX_GPUS_PER_NODE = 16


_Settings = TypeVar("_Settings", "ClusterConfig", "DaemonConfig", "TrainConfig")


class ConfigError(ValueError):
    """Settings that cannot be used; the message names the setting and why."""


@dataclass(frozen=True)
class ClusterConfig:
    gpu_model: str = DEFAULT_MODEL.key
    nodes: int = 1
    gpus_per_node: int = 8
    hostname_prefix: str = ""  # empty: derived from the model ("dgx-h100-")
    seed: int = 0

    @property
    def spec(self) -> GpuSpec:
        return lookup(self.gpu_model)

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def resolved_hostname_prefix(self) -> str:
        return self.hostname_prefix or f"{self.spec.host_prefix}-"

    def validated(self) -> ClusterConfig:
        """Check every field; return the config with the model's canonical key."""
        if not isinstance(self.gpu_model, str):
            raise ConfigError(
                f"gpu_model must be a model name (see `fakehw models`), got {self.gpu_model!r}"
            )
        try:
            spec = lookup(self.gpu_model)
        except UnknownGpuModel as exc:
            raise ConfigError(str(exc)) from exc
        _check_int("nodes", self.nodes, 1, MAX_GPUS)
        _check_int("gpus_per_node", self.gpus_per_node, 1, MAX_GPUS_PER_NODE)
        if self.nodes * self.gpus_per_node > MAX_GPUS:
            raise ConfigError(f"a cluster of more than {MAX_GPUS} GPUs is not supported")
        _check_int("seed", self.seed, 0, 2**63 - 1)
        prefix = self.hostname_prefix
        if (
            not isinstance(prefix, str)
            or len(prefix) > 40
            or any(not (ch.isascii() and (ch.isalnum() or ch in "-_.")) for ch in prefix)
        ):
            raise ConfigError(
                "hostname_prefix must be up to 40 ASCII letters, digits, '-', '_' or '.'"
            )
        return replace(self, gpu_model=spec.key)

    def describe(self) -> str:
        spec = self.spec
        node_word = "node" if self.nodes == 1 else "nodes"
        return f"{self.nodes} {node_word} x {self.gpus_per_node} {spec.name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown cluster setting(s): {', '.join(sorted(unknown))}")
        return cls(**dict(data)).validated()


@dataclass(frozen=True)
class DaemonConfig:
    idle_timeout_s: float = 600.0
    tick_hz: float = 10.0
    tcp_listen: str = ""  # "[HOST:]PORT": also serve read-only views over TCP; "" = off
    tcp_token_file: str = ""  # "" = RUNTIME_DIR/tcp.token, created on first use

    def validated(self) -> DaemonConfig:
        _check_number("idle_timeout_s", self.idle_timeout_s, 1.0, 7 * 86400.0)
        _check_number("tick_hz", self.tick_hz, 1.0, 100.0)
        if not isinstance(self.tcp_listen, str):
            raise ConfigError(f"tcp_listen must be a string, got {self.tcp_listen!r}")
        if self.tcp_listen:
            parse_tcp_address(self.tcp_listen)
        if not isinstance(self.tcp_token_file, str):
            raise ConfigError(f"tcp_token_file must be a string, got {self.tcp_token_file!r}")
        return self

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return parse_tcp_address(self.tcp_listen) if self.tcp_listen else None


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = ""  # fake-train --output-dir's default; "" = write nothing

    def validated(self) -> TrainConfig:
        if not isinstance(self.output_dir, str):
            raise ConfigError(f"output_dir must be a path, got {self.output_dir!r}")
        return self


def parse_tcp_address(text: str) -> tuple[str, int]:
    try:
        return tcpaddress.parse_tcp_address(text)
    except ValueError as exc:
        raise ConfigError(f"tcp_listen: {exc}") from None


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value}")


def config_path() -> Path:
    explicit = os.environ.get("FAKEHW_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fakehw" / "config.toml"


def load_settings(path: Path | None = None) -> tuple[ClusterConfig, DaemonConfig]:
    """Defaults overlaid with the config file, validated."""
    data, path = _read(path)
    try:
        cluster = _overlay(ClusterConfig(), data.get("cluster", {}), "cluster").validated()
        daemon = _overlay(DaemonConfig(), data.get("daemon", {}), "daemon").validated()
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc
    return cluster, daemon


def load_train_settings(path: Path | None = None) -> TrainConfig:
    """fake-train's defaults (the ``[train]`` table) overlaid on its built-in ones."""
    data, path = _read(path)
    try:
        return _overlay(TrainConfig(), data.get("train", {}), "train").validated()
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


SECTIONS = ("cluster", "daemon", "train")


def _read(path: Path | None) -> tuple[dict[str, Any], Path]:
    """The config file's tables (none when there is no file), and its path."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        if os.environ.get("FAKEHW_CONFIG"):
            raise ConfigError(f"config file {path} (from FAKEHW_CONFIG) does not exist") from None
        return {}, path
    except OSError as exc:  # unreadable, or a directory above it that is not ours
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    unknown_tables = set(data) - set(SECTIONS)
    if unknown_tables:
        raise ConfigError(
            f"config file {path}: unknown section(s) {', '.join(sorted(unknown_tables))} "
            "(expected [cluster], [daemon] and [train])"
        )
    return data, path


def _overlay(base: _Settings, table: object, section: str) -> _Settings:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table")
    known = {f.name for f in fields(base)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in [{section}]: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(known))})"
        )
    return replace(base, **dict(table))
