"""dcgmi's command lines as TCLAP parses them: ``-e VALUE`` / ``--field-id VALUE``
options and ``-l`` switches, one ``-h/--help``, and TCLAP's own refusal (``PARSE
ERROR``, a short usage, exit 1) for what it cannot parse."""

from __future__ import annotations

from dataclasses import dataclass, field

from fakehw.dcgmi import status

HELP_INDENT, HELP_WIDTH = 2, 80


@dataclass(frozen=True)
class Option:
    short: str  # "e", or "" for a long-only option
    long: str  # "field-id"
    value_name: str | None  # "fieldId"; None for a switch
    help: str
    integer: bool = False

    @property
    def label(self) -> str:
        """TCLAP's ``toString()``: ``-e (--field-id)``."""
        return (f"-{self.short} " if self.short else "") + f"(--{self.long})"


@dataclass
class Parsed:
    values: dict[str, str | int | bool] = field(default_factory=dict)

    def given(self, name: str) -> bool:
        return name in self.values

    def get(self, name: str, default: str | int | bool) -> str | int | bool:
        return self.values.get(name, default)


class TclapFailure(status.DcgmiError):
    """TCLAP's ``failure``: the error, the usage, exit 1 (stderr)."""

    def __init__(self, arg_id: str, text: str, usage: list[str]) -> None:
        lines = [
            f"PARSE ERROR: {arg_id}",
            f"             {text}",
            "",
            "Usage: ",
            *usage,
            "",
            "For complete USAGE and HELP type: ",
            f"   {usage_program(usage)} --help",
            "",
        ]
        super().__init__(lines, status.TCLAP_EXIT, "stderr")


class HelpRequested(Exception):
    """``-h`` / ``--help``: the long usage, exit 0."""


def usage_program(usage: list[str]) -> str:
    return " ".join(usage[0].split()[:2]) if usage else "dcgmi"


@dataclass(frozen=True)
class Command:
    """One subsystem's options; ``one_of`` are TCLAP's xor group (exactly one required)."""

    name: str  # "dmon"
    description: str
    options: tuple[Option, ...]
    one_of: tuple[str, ...] = ()

    def short_usage(self) -> list[str]:
        parts = []
        for option in self.options:
            flag = f"-{option.short}" if option.short else f"--{option.long}"
            shown = flag + (f" <{option.value_name}>" if option.value_name else "")
            parts.append(shown if option.long in self.one_of else f"[{shown}]")
        return ["   dcgmi " + self.name + " " + " ".join(parts)]

    def long_usage(self) -> list[str]:
        lines = [
            f" {self.description}",
            "",
            "Usage: dcgmi " + self.name,
            *self.short_usage(),
            "",
            "Flags:",
        ]
        for option in (
            *self.options,
            Option("h", "help", None, "Displays usage information and exits."),
        ):
            flag = f"{'-' + option.short if option.short else '  '}  --{option.long}"
            lines += _space_print(f"{flag:<17}{option.value_name or '':<10} {option.help}")
        return lines

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
                raise TclapFailure(
                    f"Argument: {word}", "Couldn't find match for argument", self.short_usage()
                )
            if option.long in parsed.values:
                raise TclapFailure(
                    f"Argument: {option.label}", "Argument already set!", self.short_usage()
                )
            if option.value_name is None:
                parsed.values[option.long] = True
                index += 1
                continue
            if index + 1 >= len(argv):
                raise TclapFailure(
                    f"Argument: {option.label}",
                    "Missing a value for this argument!",
                    self.short_usage(),
                )
            value = argv[index + 1]
            parsed.values[option.long] = self._typed(option, value)
            index += 2
        chosen = [o for o in self.options if o.long in self.one_of and o.long in parsed.values]
        if len(chosen) > 1:  # TCLAP's XorHandler, on the second of them
            raise TclapFailure(
                f"Argument: {chosen[1].label}",
                "Mutually exclusive argument already set!",
                self.short_usage(),
            )
        if self.one_of and not chosen:  # CmdLine::missingArgsException: each of them required
            names = ", ".join(self.one_of)
            plural = "s" if len(self.one_of) > 1 else ""
            raise TclapFailure(
                " ", f"Required argument{plural} missing: {names}", self.short_usage()
            )
        return parsed

    def _typed(self, option: Option, value: str) -> str | int:
        if not option.integer:
            return value
        text = value.strip()
        if not (text.isascii() and text.lstrip("+-").isdigit()):
            raise TclapFailure(
                f"Argument: {option.label}",
                f"Couldn't read argument value from string '{value}'",
                self.short_usage(),
            )
        return int(text)


def _space_print(text: str) -> list[str]:
    """``DCGMOutput::spacePrint(os, text, 80, 2, 29)``: wrapped at spaces, the lines after
    the first indented to the help column."""
    if len(text) + HELP_INDENT <= HELP_WIDTH:
        return [" " * HELP_INDENT + text]
    lines, indent, allowed, start = [], HELP_INDENT, HELP_WIDTH - HELP_INDENT, 0
    while start < len(text):
        length = min(len(text) - start, allowed)
        if length == allowed:
            while length >= 0 and text[start + length] not in " ,|":
                length -= 1
        if length <= 0:
            length = allowed
        lines.append(" " * indent + text[start : start + length])
        if start == 0:
            indent += 29
            allowed -= 29
        while start < len(text) and start + length < len(text) and text[start + length] == " ":
            start += 1
        start += length
    return lines
