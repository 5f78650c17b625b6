"""How ``greenagents stats`` prints the execution log's totals: a table, JSON or CSV.

The numbers come from :func:`greenagents.tracking.summary` and :func:`~greenagents.tracking.failures`;
this module only lays them out, so tools can read ``--json``/``--csv`` and people the table.

>>> print(table([["a", "1"], ["bb", "22"]], ["key", "n"]))
key   n
---  --
a     1
bb   22
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

__all__ = ["render", "table"]

_CSV_FIELDS = ("key", "calls", "ok", "success_rate", "p50_s", "p95_s", "prompt_tokens",
               "completion_tokens", "cost_usd")


def table(rows: list[list[str]], header: list[str] | None = None) -> str:
    """Plain-text columns: the first left-aligned, the others (numbers) right-aligned."""
    lines = ([header] if header else []) + rows
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    text = ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                      for column, (cell, width) in enumerate(zip(line, widths, strict=True))).rstrip()
            for line in lines]
    if header:
        text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def render(groups: list[dict[str, Any]], failed: list[dict[str, Any]], *, by: str, form: str,
           show_errors: bool, empty: str) -> str:
    """The whole output of ``stats`` in ``form`` (``table``, ``json`` or ``csv``), newline-ended."""
    if form == "json":
        document: dict[str, Any] = {"by": by, "groups": groups}
        if show_errors:
            document["failures"] = failed
        return json.dumps(document, indent=2) + "\n"
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if show_errors:
            writer.writerow(list(failed[0]) if failed else ["ts"])
            writer.writerows(list(row.values()) for row in failed)
        else:
            writer.writerow([by if name == "key" else name for name in _CSV_FIELDS])
            writer.writerows([group[name] for name in _CSV_FIELDS] for group in groups)
        return out.getvalue()
    if not groups:
        return empty + "\n"
    return _as_table(groups, failed, by, show_errors)


def _as_table(groups: list[dict[str, Any]], failed: list[dict[str, Any]], by: str,
              show_errors: bool) -> str:
    rows = [[g["key"], f"{g['calls']:,}", f"{g['success_rate']:.1%}", f"{g['p50_s']:.2f}s",
             f"{g['p95_s']:.2f}s", f"{g['prompt_tokens'] + g['completion_tokens']:,}",
             "?" if g["cost_usd"] is None else f"${g['cost_usd']:.4f}"] for g in groups]
    lines = [table(rows, [by, "calls", "ok", "p50", "p95", "tokens", "cost"])]
    top = [(count, text, g["key"]) for g in groups for count, text in g["errors"]]
    if top:
        width = None if show_errors else 100  # --errors: whole messages
        lines += ["", "top errors"]
        lines += [f"  {count:>6,}  {key}  {text[:width]}"
                  for count, text, key in sorted(top, reverse=True)[:5]]
    if show_errors:
        lines += ["", f"failed calls (newest first, at most {len(failed)})" if failed
                  else "no failed calls"]
        for row in failed:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["ts"]))
            index = "-" if row["input_index"] is None else row["input_index"]
            lines.append(f"  {when}  run {row['run_id']}  input {index}  {row['agent']}  "
                         f"{row['error_class']}: {row['error_message']}")
    return "\n".join(lines) + "\n"
