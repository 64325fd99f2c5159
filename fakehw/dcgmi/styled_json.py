"""JSON as dcgmi's ``-j`` writes it: jsoncpp's ``StyledWriter`` (``toStyledString``),
keys sorted, three-space indents, ``"key" : value``, short arrays of plain values on one
line (``[ "a", "b" ]``), and a final newline."""

from __future__ import annotations

import json
from typing import Any

INDENT = "   "
RIGHT_MARGIN = 74


class _Writer:
    def __init__(self) -> None:
        self.document = ""
        self.indent = ""
        self.child_values: list[str] | None = None  # collecting an array's one-line parts

    def write_indent(self) -> None:
        if self.document:
            last = self.document[-1]
            if last == " ":
                return
            if last != "\n":
                self.document += "\n"
        self.document += self.indent

    def write_with_indent(self, text: str) -> None:
        self.write_indent()
        self.document += text

    def push(self, text: str) -> None:
        if self.child_values is not None:
            self.child_values.append(text)
        else:
            self.document += text

    def write(self, value: Any) -> None:
        if isinstance(value, dict):
            if not value:
                self.push("{}")
                return
            self.write_with_indent("{")
            self.indent += INDENT
            for number, name in enumerate(sorted(value)):
                self.write_with_indent(json.dumps(name))
                self.document += " : "
                self.write(value[name])
                if number + 1 < len(value):
                    self.document += ","
            self.indent = self.indent[: -len(INDENT)]
            self.write_with_indent("}")
        elif isinstance(value, list):
            self.write_array(value)
        else:
            self.push(json.dumps(value))

    def write_array(self, values: list[Any]) -> None:
        if not values:
            self.push("[]")
            return
        parts = self.one_line_parts(values)
        if parts is None:
            self.write_with_indent("[")
            self.indent += INDENT
            for number, value in enumerate(values):
                self.write_indent()
                self.write(value)
                if number + 1 < len(values):
                    self.document += ","
            self.indent = self.indent[: -len(INDENT)]
            self.write_with_indent("]")
        else:
            self.push("[ " + ", ".join(parts) + " ]")

    def one_line_parts(self, values: list[Any]) -> list[str] | None:
        """``isMultilineArray``: the children as text when they fit one line, else None."""
        if len(values) * 3 >= RIGHT_MARGIN:
            return None
        if any(isinstance(v, (dict, list)) and v for v in values):
            return None
        outer, self.child_values = self.child_values, []
        for value in values:
            self.write(value)
        parts, self.child_values = self.child_values, outer
        length = 4 + (len(values) - 1) * 2 + sum(len(part) for part in parts)
        return None if length >= RIGHT_MARGIN else parts


def dumps(value: Any) -> str:
    writer = _Writer()
    writer.write(value)
    return writer.document + "\n"
