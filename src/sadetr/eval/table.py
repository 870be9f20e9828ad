"""`format_table`: the brief metrics as a readable text table (rich)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table


def format_table(metrics: dict) -> str:
    """The `brief` metrics of an `evaluate` result, one row per key, with the query counts as caption."""
    meta = metrics.get("meta", {})
    title = "sadetr evaluate"
    if "num_queries" in meta:
        title += f" ({meta['num_queries']} queries)"
    caption = None
    if meta.get("num_left_out"):
        caption = (
            f"{meta['num_left_out']} qids left out: {meta.get('num_missing', 0)} without prediction, "
            f"{meta.get('num_extra', 0)} not in the ground truth"
        )
    table = Table(title=title, caption=caption)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.get("brief", {}).items():
        table.add_row(key, f"{value:.2f}")
    buf = io.StringIO()
    Console(file=buf, width=100, color_system=None, force_terminal=False).print(table)
    return buf.getvalue()
