"""LaTeX for tables a paper can paste: a booktabs ``tabular`` with numeric columns aligned.

Written by hand rather than with tabulate's ``latex_booktabs`` or pandas' ``Styler.to_latex``:
neither puts a rule between groups of rows (baselines, methods, the supervised upper bound),
and tabulate escapes the markup a cell needs (``\\textbf``, ``{\\scriptsize ...}``). This module
only assembles text; which cell is bold and where the rules go is decided by `bench.table`.

Numeric columns are right-aligned (``r``), or with ``siunitx`` ``S`` columns aligned on the
decimal point (``S[table-format=2.2]``); then headers and non-numbers are braced, as
``siunitx`` expects, and bold numbers are written ``\\bfseries 54.60`` (they need
``\\sisetup{detect-weight=true}``; siunitx v2 also ``\\robustify\\bfseries`` from etoolbox).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "Δ": r"$\Delta$", "±": r"$\pm$", "†": r"$^\dagger$", "→": r"$\rightarrow$",
}
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")
#: what a missing number is written as
MISSING = "--"


def escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (and Δ, ±, †, → as math)."""
    return "".join(_SPECIAL.get(ch, ch) for ch in str(text))


def is_number(text: str) -> bool:
    """Whether ``text`` is a plain decimal number (``54.60``, ``+1.20``, ``64``)."""
    return bool(_NUMBER.match(text))


def table_format(numbers: Sequence[str]) -> str:
    """The ``siunitx`` ``table-format`` that fits ``numbers`` (e.g. ``+2.2``)."""
    sign = any(n[0] in "+-" for n in numbers)
    digits = [n.lstrip("+-").partition(".") for n in numbers]
    whole = max((len(a) for a, _, _ in digits), default=1)
    frac = max((len(c) for _, _, c in digits), default=0)
    return f"{'+' if sign else ''}{whole}.{frac}"


@dataclass
class LatexColumn:
    """One column as LaTeX sees it: its header and alignment."""

    header: str
    #: ``l`` text, ``r`` right-aligned, ``S`` siunitx number column
    align: str = "l"
    #: the ``table-format`` of an ``S`` column
    fmt: str = ""


def number(text: str, bold: bool, column: LatexColumn) -> str:
    """A numeric cell: ``54.60``, bold, a signed difference or a missing value, for its column."""
    if text in ("", "-", MISSING):
        return "{" + MISSING + "}" if column.align == "S" else MISSING
    if column.align == "S":
        return rf"\bfseries {text}" if bold else text
    shown = f"${text}$" if text[0] in "+-" else text  # a real minus sign
    return rf"\textbf{{{shown}}}" if bold else shown


def text_cell(text: str, column: LatexColumn) -> str:
    """Non-numeric content of a cell: braced in an ``S`` column so siunitx leaves it alone."""
    return "{" + text + "}" if column.align == "S" else text


def tabular(columns: Sequence[LatexColumn], rows: Sequence[Sequence[str]],
            rules_before: Sequence[int] = (), comment: str = "") -> str:
    """A booktabs ``tabular``: ``rows`` hold finished cell text; ``\\midrule`` before each row
    index in ``rules_before``; ``comment`` becomes ``%`` lines above it."""
    spec = "".join(f"S[table-format={c.fmt}]" if c.align == "S" else c.align for c in columns)
    head = [("{" + c.header + "}") if c.align == "S" else c.header for c in columns]
    lines = [f"% {line}" for line in comment.splitlines() if line]
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(head) + r" \\",
              r"\midrule"]
    rules = set(rules_before)
    for i, row in enumerate(rows):
        if i in rules and i > 0:
            lines.append(r"\midrule")
        lines.append(" & ".join(row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
