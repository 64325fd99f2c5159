"""dcgmi's three table layouts, shared by its commands: the column table
(``DcgmiOutputColumns``: ``discovery``), the tree (``DcgmiOutputTree``: ``health``) and
the diagnostic's fixed-width stencil rows (``diag``). Each pads and never truncates,
as the C++ ``setw`` does, except the stencil, which cuts a long value to ``...``."""

from __future__ import annotations

from collections.abc import Sequence


def column_rule(widths: Sequence[int]) -> str:
    return "+" + "".join("-" * width + "+" for width in widths)


def column_row(widths: Sequence[int], values: Sequence[str]) -> str:
    cells = [value.ljust(width - 2) for width, value in zip(widths, values, strict=True)]
    return "| " + " | ".join(cells) + " |"


def column_table(
    widths: Sequence[int],
    labels: Sequence[str],
    sections: Sequence[Sequence[Sequence[str]]],
    separate_sections: bool,
) -> list[str]:
    """Rule, labels, rule, then each section (one list of lines per column, the shorter
    columns padded with blanks), a rule between sections if ``separate_sections``, and
    the closing rule."""
    rule = column_rule(widths)
    lines = [rule, column_row(widths, labels), rule]
    for number, section in enumerate(sections):
        if separate_sections and number:
            lines.append(rule)
        for row in range(max(len(column) for column in section)):
            lines.append(column_row(widths, [c[row] if row < len(c) else "" for c in section]))
    lines.append(rule)
    return lines


class Tree:
    """``DcgmiOutputTree(left, right)``: two columns ``left`` and ``right`` wide (borders
    included), a full-width header, rows whose left cell is indented by level."""

    def __init__(self, left_width: int, right_width: int) -> None:
        self.left = left_width - 3
        self.right = right_width - 4
        self.rule = "+" + "-" * (left_width - 1) + "+" + "-" * (right_width - 2) + "+"

    def header(self, title: str) -> list[str]:
        return [
            self.rule,
            "| " + title.ljust(self.left + self.right + 4) + "|",
            self.rule.replace("-", "="),
        ]

    def row(self, label: str, value: str, level: int = 0) -> str:
        prefix = "-> " if level else ""
        left = (prefix + label).rjust(len(prefix) + len(label) + 3 * max(0, level - 1))
        return "| " + left.ljust(self.left) + " | " + value.ljust(self.right) + " |"


STENCIL_NAME, STENCIL_VALUE = 25, 46  # diag's "| <DATA_NAME ...> | <DATA_INFO ...> |"


def cut(text: str, width: int) -> str:
    """dcgmi's way with a value too long for its place: cut to ``width``, ending ``...``."""
    return text if len(text) <= width else text[: width - 3] + "..."


def stencil_cell(text: str, width: int) -> str:
    """``CommandOutputController::ReplaceTag``: padded, or cut."""
    return cut(text, width).ljust(width)


def stencil_row(name: str, value: str) -> str:
    return f"| {stencil_cell(name, STENCIL_NAME)} | {stencil_cell(value, STENCIL_VALUE)} |"
