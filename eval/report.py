"""Readable output of an evaluation: a rich table of the metrics and the efficiency figures."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .pipeline import EvalReport


def print_report(report: EvalReport, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{report.model} on {report.dataset} ({report.split}): {report.num_queries} queries, "
                        f"{report.num_docs} documents")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in report.metrics.items():
        table.add_row(name, f"{value:.4f}")
    for name, value in report.efficiency.items():
        if isinstance(value, (bool, str)):
            table.add_row(name, str(value))
        elif isinstance(value, dict) and "p50" in value:
            table.add_row(name, f"p50 {value['p50']:.2f}  p99 {value['p99']:.2f}")
        elif isinstance(value, float):
            table.add_row(name, f"{value:,.2f}")
        elif isinstance(value, int):
            table.add_row(name, f"{value:,}")
    console.print(table)
