"""dcgmi's command lines as TCLAP parses them: ``-e VALUE`` / ``--field-id VALUE``
options and ``-l`` switches, one ``-h/--help``, and TCLAP's own refusal (``PARSE
ERROR``, a short usage, exit 1) for what it cannot parse."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fakehw.dcgmi import status

FORMAL_NAME = "NVIDIA Datacenter GPU Management Interface"  # _DCGMI_FORMAL_NAME
HOST_HELP = (  # g_hostnameHelpText
    "Connects to specified IP or fully-qualified domain name. To connect to a host engine that "
    "was started with -d (unix socket), prefix the unix socket filename with 'unix://'. "
    "[default = localhost]"
)
SUPPORTED_ENTITIES = (  # g_supportedEntitiesAndExamples
    "\nSupported entities: compute_instance, core, cpu, cx, gpu, gpu_link, instance, link, "
    "switch_link, nvswitch, vgpu."
    "\nExamples:"
    "\n- Basic GPU IDs: '0,1,2' (GPUs 0, 1, and 2)"
    "\n- Mixed entities: 'gpu:7,instance:1,compute_instance:2,nvswitch:5,cpu:3,core:4'"
    "\n- Full names: 'gpu:3,instance:1,compute_instance:2,vgpu:1,nvswitch:0,cpu:0,core:0,cx:0,"
    "link:0,gpu_link:0:5,switch_link:0:5'"
    "\n- Short names: 'g:0,i:1,c:2,v:1,n:0,cpu:0,core:0,cx:0,l:0,gpu_link:0:5,switch_link:0:5'"
    "\n- Range syntax: '{0-2},instance:{0-1},cpu:{0-3}'"
    "\n- GPU NVLink per-port: 'gpu_link:0:5' (GPU 0, link index 5)"
    "\n- GPU NVLink range: 'gpu_link:0:{0-5}' (GPU 0, links 0-5), 'gpu_link:{0-1}:{0-3}' "
    "(GPUs 0-1, links 0-3)"
    "\n- NvSwitch NVLink per-port: 'switch_link:0:5' (NvSwitch 0, link index 5)"
    "\n- NvSwitch NVLink range: 'switch_link:0:{0-5}' (NvSwitch 0, links 0-5), "
    "'switch_link:{0-1}:{0-3}' (NvSwitches 0-1, links 0-3)"
)
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # a C int
INTEGER = re.compile(r"[+-]?[0-9]+")
REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Option:
    short: str  # "e", or "" for a long-only option
    long: str  # "field-id"
    value_name: str | None  # "fieldId"; None for a switch
    help: str
    kind: str = "text"  # "text", "int" (TCLAP's ValueArg<int>) or "real" (ValueArg<double>)

    @property
    def label(self) -> str:
        """TCLAP's ``toString()``: ``-e (--field-id)``."""
        return (f"-{self.short} " if self.short else "") + f"(--{self.long})"


HELP = Option("h", "help", None, "Displays usage information and exits.")
HOST = Option("", "host", "IP/FQDN", HOST_HELP)  # every subsystem's
JSON = Option("j", "json", None, "Print the output in a json format")


@dataclass
class Parsed:
    values: dict[str, str | int | float | bool] = field(default_factory=dict)

    def given(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str, default: str | int | float | bool) -> str | int | float | bool:
        return self.values.get(name, default)


class TclapFailure(status.DcgmiError):
    """``DCGMOutput::failure``: the error, the short usage, exit 1 (stderr)."""

    def __init__(self, arg_id: str, text: str, command: Command) -> None:
        lines = [
            f"PARSE ERROR: {arg_id}",
            f"             {text}",
            "",
            "Usage: ",
            *command.short_usage(),
            "",  # the short usage's own blank line
            "",
            "For complete USAGE and HELP type: ",
            f"   {command.program} --help",
            "",
        ]
        super().__init__(lines, status.TCLAP_EXIT, "stderr")


class HelpRequested(Exception):
    """``-h`` / ``--help``: the long usage, exit 0."""


@dataclass(frozen=True)
class Command:
    """One subsystem's options; ``one_of`` are TCLAP's xor group (exactly one required),
    in the order dcgmi adds them; ``required`` those required on their own."""

    name: str  # "dmon"
    description: str
    options: tuple[Option, ...]
    one_of: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    usage_groups: tuple[tuple[str, ...], ...] = ()  # dcgmi's addToGroup, by group name
    footer: str = ""  # addFooter's, after the flags

    @property
    def program(self) -> str:
        """TCLAP's program name: ``argv[0]`` and the subsystem (as the user ran dcgmi)."""
        return f"dcgmi {self.name}"

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.long == name)

    def short_id(self, option: Option) -> str:
        """TCLAP's ``shortID``: ``[-e <fieldId>]``, brackets off a required option."""
        shown = f"-{option.short}" if option.short else f"--{option.long}"
        if option.value_name:
            shown += f" <{option.value_name}>"
        return shown if option.long in self.required else f"[{shown}]"

    def short_usage(self) -> list[str]:
        """``_shortUsageGroup``: a line for each of dcgmi's usage groups."""
        lines = []
        for group in self.usage_groups:
            text = f"{self.program} " + "".join(self.short_id(self.option(n)) + " " for n in group)
            lines += space_print(text, 75, 3, 5)
        return lines

    def long_usage(self) -> list[str]:
        """``DCGMOutput::usage``: the description, the short usage, then every flag (the
        host and group first, then the exclusive ones, then the rest)."""
        first = [o for o in self.options if o.long in ("host", "group")]
        exclusive = [self.option(name) for name in self.one_of]  # in xorAdd's order
        rest = [o for o in self.options if o not in first and o not in exclusive]
        lines = ["", *space_print(self.description, 80, 1, 0), "", f"Usage: {self.program}",
                 *self.short_usage(), "", "Flags:"]  # fmt: skip
        for option in (*first, *exclusive, *rest, HELP):
            flag = f"{'-' + option.short if option.short else '  '}  --{option.long}"
            lines += space_print(
                f"{flag:<17}{option.value_name or '':<10} {option.help}", 80, 2, 29
            )
        footer = [*space_print(self.footer, 80, 1, 0), ""] if self.footer else [" "]
        return [*lines, "", *footer, *space_print(FORMAL_NAME, 80, 1, 0), ""]

    def parse(self, argv: list[str]) -> Parsed:
        parsed = Parsed()
        by_flag = {f"--{o.long}": o for o in self.options}
        by_flag.update({f"-{o.short}": o for o in self.options if o.short})
        index = 0
        while index < len(argv):
            word = argv[index]
            if word in ("-h", "--help"):
                raise HelpRequested()
            option = by_flag.get(word)
            if option is None:
                raise TclapFailure(f"Argument: {word}", "Couldn't find match for argument", self)
            if option.long in parsed.values:
                raise TclapFailure(f"Argument: {option.label}", "Argument already set!", self)
            if option.value_name is None:
                parsed.values[option.long] = True
                index += 1
                continue
            if index + 1 >= len(argv):
                raise TclapFailure(
                    f"Argument: {option.label}",
                    "Missing a value for this argument!",
                    self,
                )
            value = argv[index + 1]
            parsed.values[option.long] = self._typed(option, value)
            index += 2
        given = [argv_flag for argv_flag in argv if by_flag.get(argv_flag) in self._xor_options()]
        if len(given) > 1:  # TCLAP 1.4's ExclusiveArgGroup, before any value is checked
            raise TclapFailure(f"Argument: {' AND '.join(given)} provided.",
                               "Only one is allowed.", self)  # fmt: skip
        missing = [name for name in self.required if name not in parsed.values]
        if self.one_of and not given:
            missing.insert(0, "{" + " | ".join(self.one_of) + "}")
        if missing:  # CmdLine::missingArgsException
            plural = "s" if len(missing) > 1 else ""
            raise TclapFailure(" ", f"Required argument{plural} missing: {', '.join(missing)}",
                               self)  # fmt: skip
        return parsed

    def _xor_options(self) -> list[Option]:
        return [o for o in self.options if o.long in self.one_of]

    def _typed(self, option: Option, value: str) -> str | int | float:
        """The value as TCLAP's stream extraction reads it, or its refusal."""
        if option.kind == "text":
            return value
        text = value.strip()
        if option.kind == "int" and INTEGER.fullmatch(text) and INT_MIN <= int(text) <= INT_MAX:
            return int(text)
        if option.kind == "real" and REAL.fullmatch(text):
            return float(text)
        raise TclapFailure(f"Argument: {option.label}",
                           f"Couldn't read argument value from string '{value}'",
                           self)  # fmt: skip


def space_print(text: str, max_width: int, indent: int, second_line_offset: int) -> list[str]:
    """``DCGMOutput::spacePrint``: ``text`` wrapped at a space, comma or bar to
    ``max_width``, indented, the lines after the first ``second_line_offset`` further; a
    newline in a wrapped text ends its line. Widths count bytes, as the C++ does (an en
    dash is three)."""
    data = text.encode()
    if len(data) + indent <= max_width or max_width <= 0:
        return [" " * indent + text]
    chars, total = bytearray(data), len(data)
    allowed, start, lines = max_width - indent, 0, []
    while start < total:
        length = min(total - start, allowed)
        if length == allowed:
            while length >= 0 and (start + length >= total or chars[start + length] not in b" ,|"):
                length -= 1
        if length <= 0:
            length = allowed
        newline = chars.find(b"\n", start, start + length)
        if newline >= 0:
            chars[newline] = ord(" ")
            length = newline - start + 1
        piece = bytes(chars[start : start + length]).decode(errors="replace")
        lines.append(" " * indent + piece)
        if start == 0:
            indent += second_line_offset
            allowed -= second_line_offset
        while start + length < total and chars[start + length] == ord(" "):
            start += 1
        start += length
    return lines
