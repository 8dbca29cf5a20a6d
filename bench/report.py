"""The results table: printed on the console and written as reStructuredText."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from bench.figures import Row

__all__ = ["render"]


def _number(value: Optional[float], unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms":
        return "%.2f" % value
    if unit == "MB":
        return "%.1f" % value
    return "{:,.0f}".format(value)


def _cells(row: Row) -> List[str]:
    if row.na is not None:
        return [row.figure, "n/a", "n/a", "", row.unit, "n/a: " + row.na]
    ratio = row.ratio
    return [row.figure, _number(row.restmq, row.unit), _number(row.baseline, row.unit),
            "" if ratio is None else "%.2f" % ratio, row.unit, row.note]


def _plain(text: str) -> str:
    """One line, with the characters that are markup in reStructuredText escaped."""
    return text.replace("\n", " ").replace("*", "\\*").replace("|", "\\|").replace("`", "'")


def _simple_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """A reStructuredText simple table (also readable as plain text)."""
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]
    # a simple table's last column may run on; the others must fit their rule
    rule = "  ".join("=" * w for w in widths)

    def line(cells: Sequence[str]) -> str:
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells))
        return text.rstrip()

    return [rule, line(header), rule] + [line(r) for r in rows] + [rule]


def render(title: str, fields: Sequence[Tuple[str, str]], rows: Sequence[Row],
           footnotes: Sequence[str] = ()) -> str:
    """The whole report: title, the machine as a field list, the table, notes."""
    out = [title, "=" * len(title), ""]
    for name, value in fields:
        out.append(":%s: %s" % (name, value))
    out.append("")
    header = ["figure", "RestMQ", "baseline", "ratio", "unit", "notes"]
    body = []
    for row in rows:
        cells = [_plain(cell) for cell in _cells(row)]
        # an empty cell before the last column would read as a continuation line
        body.append([cell or "n/a" for cell in cells[:-1]] + cells[-1:])
    out.extend(_simple_table(header, body))
    if footnotes:
        out.append("")
        out.extend(footnotes)
    return "\n".join(out) + "\n"
