"""Reports and plans as a person reads them in a terminal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def status_text(status: str) -> str:
    colour = {"complete": "green", "complete_with_rejects": "yellow", "incomplete": "red",
              "failed": "red", "interrupted": "yellow", "running": "cyan"}.get(status, "white")
    return f"[{colour}]{status.replace('_', ' ')}[/]"


def report(console: Console, report: Mapping[str, Any]) -> None:
    counts = report["counts"]
    run = f"  run {report['run']}" if report.get("run") else ""
    console.print(f"\n[bold]{report['integration']}[/]{run}")
    src, dst = report["source"], report["destination"]
    console.print(f"{src['system']}.{src['object']} → {dst['system']}.{dst['object']} "
                  f"({dst['operation']} by {dst['key']})")
    in_scope = src.get("in_scope")
    table = Table("in scope", "read", "created", "updated", "unchanged", "rejected", "skipped",
                  "failed")
    table.add_row(*(str(x) for x in (
        "-" if in_scope is None else in_scope, counts["read"], counts["created"],
        counts["updated"], counts["unchanged"], counts["rejected"], counts["skipped"],
        counts["failed"])))
    console.print(table)
    comparison = report.get("comparison")
    if comparison:
        fields = Table("field", "differing", "source checksum", "destination checksum",
                       title=f"destination compared with source ({comparison['compared']} records)")
        for name, tally in comparison["fields"].items():
            mark = "" if tally["match"] else "[red]"
            fields.add_row(name, f"{mark}{tally['differing']}", tally["source_checksum"],
                           f"{mark}{tally['destination_checksum']}")
        console.print(fields)
        for sample in comparison["samples"][:5]:
            console.print(f"  [red]≠[/] {sample}")
    by_code = report.get("set_aside_by_code")
    if by_code:
        console.print("set aside: " + ", ".join(f"{code} {n}" for code, n in sorted(by_code.items())))
    files = report.get("files")
    if files:
        console.print(f"report: {files['report']}\nrejects: {files['rejects']}")
    for system, used in (report.get("usage") or {}).items():
        console.print(f"{system}: " + ", ".join(f"{n.replace('_', ' ')} {v}" for n, v in used.items()))
    if report.get("records_per_second"):
        console.print(f"{report['seconds']} s, {report['records_per_second']:,} records/s")
    console.print(f"verdict: {status_text(report['verdict'])}"
                  + "".join(f"\n  - {r}" for r in report.get("verdict_reasons", [])))


def plan(console: Console, result: Mapping[str, Any]) -> None:
    counts = result["counts"]
    console.print(f"\n[bold]plan for {result['integration']}[/] (nothing written)")
    table = Table(*counts.keys())
    table.add_row(*(str(v) for v in counts.values()))
    console.print(table)
    for kind, items in result["examples"].items():
        console.print(f"[bold]{kind}[/] e.g.")
        for item in items:
            console.print(f"  {json.dumps(item, default=str)}")


def broadcast(console: Console, report: Mapping[str, Any]) -> None:
    console.print(f"\n[bold]{report['integration']}[/]: {report['changes']} changes; delivered "
                  f"{report['delivered']}, retrying {report['retried']}, dead {report['dead']}")
    table = Table("destination", "pending", "delivered", "dead", "discarded")
    for name, counts in report["outbox"].items():
        table.add_row(name, *(str(counts.get(s, 0)) for s in
                              ("pending", "delivered", "dead", "discarded")))
    console.print(table)


def aggregation(console: Console, report: Mapping[str, Any]) -> None:
    style = {"complete": "green", "failed": "red"}.get(report["status"], "yellow")
    console.print(f"\n[bold]{report['integration']}[/]: [{style}]{report['status']}[/], "
                  f"{report['rows']} rows in {report['seconds']}s")
    table = Table("source", "system", "status", "rows", "set aside", "seconds", "error")
    for name, source in report["sources"].items():
        table.add_row(name, source["system"], source["status"]
                      + (" (required)" if source["required"] else ""), str(source["rows"]),
                      str(source["rejected"]), str(source["seconds"]), source["error"] or "")
    console.print(table)
    if report.get("incomplete"):
        console.print("[yellow]unknown, left null[/]: " + ", ".join(
            f"{column} (needs {', '.join(sources)})" for column, sources in report["incomplete"].items()))
    for path in report.get("reports", []):
        console.print(f"report: {path}")
    for name, counts in report.get("destinations", {}).items():
        console.print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if report.get("error"):
        console.print(f"[red]{report['error']}[/]")
