"""gpustat 1.1.1's output, from a snapshot: the one-line-per-GPU view and --json.

Line for line what ``gpustat/core.py`` builds: ``[0] NAME | 68°C, 100 % |
46616 / 81559 MB | root:python3/2242(46608M)``, the header with the host name
padded to the GPU name width + 3, the locale's date and the driver version,
the same colours (as blessed writes them for xterm-256color), and the same
JSON (``indent=4``, entries keyed as ``nvidia-smi --query-gpu`` names them).
"""

from __future__ import annotations

import json
import locale
import os
from collections.abc import Callable
from datetime import datetime

from fakehw import TYPE_CHECKING
from fakehw.views.procinfo import HostProcess

if TYPE_CHECKING:
    from typing import Any

    from fakehw.contract.snapshot import NodeRecord, Snapshot

DEFAULT_GPUNAME_WIDTH = 16
LOST_KEYS = ("temperature.gpu", "fan.speed", "utilization.gpu", "utilization.enc",
             "utilization.dec", "power.draw", "enforced.power.limit", "memory.used",
             "memory.total")  # fmt: skip
VERSION = "1.1.1"

# blessed's strings for xterm-256color (what gpustat writes on a terminal).
NORMAL = "\x1b[m"
STYLE = {
    "normal": NORMAL,
    "bold": "\x1b[1m",
    "cyan": "\x1b[36m",
    "blue": "\x1b[34m",
    "red": "\x1b[31m",
    "bold_red": "\x1b[1m\x1b[31m",
    "bold_cyan": "\x1b[1m\x1b[36m",
    "yellow": "\x1b[33m",
    "bold_yellow": "\x1b[1m\x1b[33m",
    "bold_black": "\x1b[1m\x1b[30m",
    "green": "\x1b[32m",
    "bold_green": "\x1b[1m\x1b[32m",
    "magenta": "\x1b[35m",
    "bold_magenta": "\x1b[1m\x1b[35m",
    "bold_white": "\x1b[1m\x1b[37m",
    "cmd": "\x1b[38;5;24m",
}


class Options:
    """gpustat's display options (a plain class: the viewer starts fast)."""

    def __init__(
        self, *, show_cmd: bool = False, show_full_cmd: bool = False, show_user: bool = False,
        show_pid: bool = False, show_fan_speed: bool = False, show_codec: str = "",
        show_power: str | None = None, gpuname_width: int | None = None,
        show_header: bool = True, no_processes: bool = False, color: bool = False,
    ) -> None:  # fmt: skip
        self.show_cmd = show_cmd
        self.show_full_cmd = show_full_cmd
        self.show_user = show_user
        self.show_pid = show_pid
        self.show_fan_speed = show_fan_speed
        self.show_codec = show_codec
        self.show_power = show_power
        self.gpuname_width = gpuname_width
        self.show_header = show_header
        self.no_processes = no_processes
        self.color = color


def entries(
    node: NodeRecord, snapshot: Snapshot, procs: dict[int, HostProcess]
) -> list[dict[str, Any]]:
    """One dict per GPU, keyed as gpustat keys them."""
    result: list[dict[str, Any]] = []
    for gpu in node["gpus"]:
        if gpu.get("lost"):
            # what gpustat's InvalidGPU shows for NVMLError_GpuIsLost: "?" everywhere
            unknown = dict.fromkeys(LOST_KEYS, "?")
            result.append({"index": gpu["index"], "name": "((GPU is lost))", **unknown,
                           "processes": None})  # fmt: skip
            continue
        model = snapshot["models"][gpu["model"]]
        processes = []
        for record in node["processes"]:
            if record["gpu_index"] != gpu["index"]:
                continue
            info = procs[record["pid"]]
            processes.append(
                {
                    "username": info.user,
                    "command": info.command,
                    "full_command": list(info.cmdline),
                    "gpu_memory_usage": record["used_memory_mib"],
                    "cpu_percent": info.cpu_percent,
                    "cpu_memory_usage": info.memory_bytes,
                    "pid": record["pid"],
                }
            )
        result.append(
            {
                "index": gpu["index"],
                "uuid": gpu["uuid"],
                "name": model["name"],
                "temperature.gpu": gpu["temperature_gpu_c"],
                # datacenter boards are passively cooled: NVML has no fan speed
                "fan.speed": None if not model["fan_count"] else 0,
                "utilization.gpu": gpu["utilization_gpu_pct"],
                "utilization.enc": 0,
                "utilization.dec": 0,
                "power.draw": gpu["power_draw_mw"] // 1000,
                "enforced.power.limit": gpu["power_limit_mw"] // 1000,
                # NVML's bytes, divided by 2**20 as gpustat does
                "memory.used": gpu["memory_used_mib"],
                "memory.total": gpu["memory_total_mib"],
                "processes": processes,
            }
        )
    return result


def _shorten_left(text: str, width: int | None, placeholder: str = "…") -> str:
    if width is None or len(text) <= width:
        return text
    if width == 0:
        return ""
    if width <= len(placeholder):
        return placeholder[:width]
    return placeholder + text[-(width - len(placeholder)) :]


def _value(entry: dict[str, Any], key: str) -> Any:
    value = entry.get(key)
    return "??" if value is None else value


def gpu_line(entry: dict[str, Any], options: Options, eol: str = "\n") -> str:
    """``GPUStat.print_to``: one GPU, and with -f its processes' lines."""
    style = STYLE if options.color else {key: "" for key in STYLE}
    c0, c1 = style["normal"], style["cyan"]

    def when(condition: bool, yes: str, no: str) -> str:
        return style[yes] if condition else style[no]

    def number(key: str) -> int | None:
        found = entry.get(key)
        return found if isinstance(found, int) else None

    def judged(value: int | None, test: Callable[[int], bool], yes: str, no: str) -> str:
        # gpustat colours an unreadable value (None, or "?" of a lost GPU) bold black
        return style["bold_black"] if value is None else when(test(value), yes, no)

    c_temp = judged(number("temperature.gpu"), lambda t: t < 50, "red", "bold_red")
    c_util = judged(number("utilization.gpu"), lambda u: u < 30, "green", "bold_green")
    c_fan = judged(number("fan.speed"), lambda f: f < 30, "cyan", "bold_cyan")
    draw, limit = number("power.draw"), number("enforced.power.limit")
    c_pow = judged(draw if limit else None, lambda d: d / (limit or 1) < 0.4, "magenta",
                   "bold_magenta")  # fmt: skip
    width = options.gpuname_width
    text = f"{c1}[{entry['index']}]{c0} "
    if width is None or width != 0:
        name = _shorten_left(entry["name"], width)
        c_name = style["red"] if entry.get("processes") is None else style["blue"]
        text += f"{c_name}{name:{width or DEFAULT_GPUNAME_WIDTH}}{c0} |"
    text += f"{c_temp}{_value(entry, 'temperature.gpu'):>3}°C{c0}, "
    if options.show_fan_speed:
        text += f"{c_fan}{_value(entry, 'fan.speed'):>3} %{c0}, "
    text += f"{c_util}{_value(entry, 'utilization.gpu'):>3} %{c0}"
    if options.show_codec:
        codec = []
        if "enc" in options.show_codec:
            codec.append(
                f"{style['bold']}E: {c0}{style['green']}{entry['utilization.enc']:>3} %{c0}"
            )
        if "dec" in options.show_codec:
            codec.append(
                f"{style['bold']}D: {c0}{style['green']}{entry['utilization.dec']:>3} %{c0}"
            )
        text += " ({})".format("  ".join(codec))
    if options.show_power:
        text += f",  {c_pow}{_value(entry, 'power.draw'):>3}{c0} "
        if "limit" in options.show_power:
            c_lim = style["magenta"]
            text += f"/ {c_lim}{_value(entry, 'enforced.power.limit'):>3}{c0} {c_lim}W{c0}"
        else:
            text += f"{c_pow}W{c0}"
    text += (
        f" | {c1}{style['bold_yellow']}{_value(entry, 'memory.used'):>5}{c0} "
        f"/ {style['yellow']}{_value(entry, 'memory.total'):>5}{c0} MB"
    )
    if options.no_processes:
        return text
    text += " |"
    if entry.get("processes") is None:
        return text + " (Not Supported)"
    full = []
    for p in entry["processes"]:
        part = ""
        if not options.show_cmd or options.show_user:
            part += f"{style['bold_black']}{p['username']}{c0}"
        if options.show_cmd:
            if part:
                part += ":"
            part += f"{c1}{p['command']}{c0}"
        if options.show_pid:
            part += f"/{p['pid']}"
        part += f"({style['yellow']}{p['gpu_memory_usage']}M{c0})"
        text += " " + part
        if options.show_full_cmd:
            full.append(eol + _full_process(p, style))
    if full:
        full[-1] = full[-1].replace("├", "└", 1)
        text += "".join(full)
    return text


def _full_process(p: dict[str, Any], style: dict[str, str]) -> str:
    c0 = style["normal"]
    text = f"{c0} ├─ {p['pid']:>6} "
    text += (
        f"{c0}({style['green']}{p['cpu_percent']:4.0f}%{c0}, "
        f"{style['yellow']}{bytes2human(p['cpu_memory_usage']):>6}{c0})"
    )
    command = p["full_command"]
    head, base = os.path.split(command[0])
    pretty = style["cmd"] + os.path.join(head, style["cyan"] + base + style["cmd"])
    if len(command) > 1:
        pretty += " " + " ".join(command[1:])
    return text + f"{c0}: {style['cmd']}{pretty}{c0}"


def bytes2human(in_bytes: int) -> str:
    suffixes = ("B", "KB", "MB", "GB", "TB", "PB")
    suffix, result = 0, int(in_bytes)
    while result > 9999 and suffix < len(suffixes):
        result >>= 10
        suffix += 1
    return f"{result}{suffixes[min(suffix, len(suffixes) - 1)]}"


def formatted(
    hostname: str, query_time: datetime, driver: str, gpus: list[dict[str, Any]],
    options: Options, eol: str = "\n",
) -> str:  # fmt: skip
    """``GPUStatCollection.print_formatted``."""
    width = options.gpuname_width
    if width is None:
        width = max([len(g["name"]) for g in gpus] + [0])
    shown = Options(**{**options.__dict__, "gpuname_width": width})
    out = []
    if options.show_header:
        style = STYLE if options.color else {key: "" for key in STYLE}
        timestr = query_time.strftime(locale.nl_langinfo(locale.D_T_FMT))
        header = (
            f"{style['bold_white']}{hostname:{(width or DEFAULT_GPUNAME_WIDTH) + 3}}"
            f"{style['normal']}  {timestr}  {style['bold_black']}{driver}{style['normal']}"
        )
        out.append(header.strip() + eol)
    for gpu in gpus:
        out.append(gpu_line(gpu, shown, eol) + eol)
    if not gpus:
        yellow = STYLE["yellow"] if options.color else ""
        out.append(f"{yellow}(No GPUs are available){NORMAL if options.color else ''}\n")
    return "".join(out)


def as_json(hostname: str, query_time: datetime, driver: str, gpus: list[dict[str, Any]]) -> str:
    document = {
        "hostname": hostname,
        "driver_version": driver,
        "query_time": query_time.isoformat(),
        "gpus": gpus,
    }
    return json.dumps(document, indent=4, separators=(",", ": ")) + "\n"
