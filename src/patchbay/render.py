"""Reports and plans as a person reads them in a terminal.

Everything that comes from data (names, values, reasons, error messages) goes through
`text`: rich reads `[...]` as markup, so a value like `[/bold]` would otherwise stop the
printing with a MarkupError, and one like `[a-z]` would silently vanish.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table


def text(value: Any) -> str:
    """A value from data, as rich markup that prints it as it is."""
    return escape(str(value))


def status_text(status: str) -> str:
    colour = {"complete": "green", "complete_with_rejects": "yellow", "incomplete": "red",
              "failed": "red", "interrupted": "yellow", "running": "cyan"}.get(status, "white")
    return f"[{colour}]{text(status.replace('_', ' '))}[/]"


def report(console: Console, report: Mapping[str, Any]) -> None:
    """A run's report; or, for `verify` (no run), the comparison it made."""
    counts = report["counts"]
    run = f"  run {text(report['run'])}" if report.get("run") else ""
    console.print(f"\n[bold]{text(report['integration'])}[/]{run}")
    src, dst = report["source"], report["destination"]
    console.print(text(f"{src['system']}.{src['object']} → {dst['system']}.{dst['object']} "
                       f"({dst['operation']} by {dst['key']})"))
    in_scope = src.get("in_scope")
    # verify writes nothing: what it counts is what it read and compared, not outcomes
    names = (("read", "rejected", "skipped") if not report.get("run") else
             ("read", "created", "updated", "unchanged", "rejected", "skipped", "failed"))
    table = Table("in scope", *names)
    table.add_row("-" if in_scope is None else str(in_scope), *(str(counts[n]) for n in names))
    console.print(table)
    comparison = report.get("comparison")
    if comparison:
        _comparison(console, comparison)
    by_code = report.get("set_aside_by_code")
    if by_code:
        console.print("set aside: " + ", ".join(f"{text(code)} {n}" for code, n in sorted(by_code.items())))
    files = report.get("files")
    if files:
        console.print(f"report: {text(files['report'])}\nrejects: {text(files['rejects'])}")
    for system, used in (report.get("usage") or {}).items():
        console.print(text(f"{system}: " + ", ".join(f"{n.replace('_', ' ')} {v}"
                                                     for n, v in used.items())))
    ranges = report.get("ranges")
    if ranges:
        console.print(f"{ranges['count']} key ranges, worked by {ranges['workers']} worker "
                      f"processes; {ranges['taken_over']} taken over from a worker that "
                      f"stopped, {ranges['resumed']} resumed from a checkpoint")
    if report.get("records_per_second"):
        console.print(f"{report['seconds']} s, {report['records_per_second']:,} records/s")
    console.print(f"verdict: {status_text(report['verdict'])}"
                  + "".join(f"\n  - {text(r)}" for r in report.get("verdict_reasons", [])))


def _comparison(console: Console, comparison: Mapping[str, Any]) -> None:
    fields = Table("field", "differing", "source checksum", "destination checksum",
                   title=f"destination compared with source ({comparison['compared']} records)")
    for name, tally in comparison["fields"].items():
        mark = "" if tally["match"] else "[red]"
        fields.add_row(text(name), f"{mark}{tally['differing']}", text(tally["source_checksum"]),
                       f"{mark}{text(tally['destination_checksum'])}")
    console.print(fields)
    for sample in comparison["samples"][:5]:
        console.print(f"  [red]≠[/] {text(sample)}")


def plan(console: Console, result: Mapping[str, Any]) -> None:
    counts = result["counts"]
    console.print(f"\n[bold]plan for {text(result['integration'])}[/] (nothing written)")
    table = Table(*counts.keys())
    table.add_row(*(str(v) for v in counts.values()))
    console.print(table)
    for kind, items in result["examples"].items():
        console.print(f"[bold]{text(kind)}[/] e.g.")
        for item in items:
            console.print(f"  {text(json.dumps(item, default=str))}")


def broadcast(console: Console, report: Mapping[str, Any]) -> None:
    console.print(f"\n[bold]{text(report['integration'])}[/]: {report['changes']} changes; delivered "
                  f"{report['delivered']}, retrying {report['retried']}, dead {report['dead']}")
    table = Table("destination", "pending", "delivered", "dead", "discarded")
    for name, counts in report["outbox"].items():
        table.add_row(text(name), *(str(counts.get(s, 0)) for s in
                              ("pending", "delivered", "dead", "discarded")))
    console.print(table)


def aggregation(console: Console, report: Mapping[str, Any]) -> None:
    style = {"complete": "green", "failed": "red"}.get(report["status"], "yellow")
    console.print(f"\n[bold]{text(report['integration'])}[/]: [{style}]{text(report['status'])}[/], "
                  f"{report['rows']} rows in {report['seconds']}s")
    table = Table("source", "system", "status", "rows", "set aside", "seconds", "error")
    for name, source in report["sources"].items():
        table.add_row(text(name), text(source["system"]), text(source["status"])
                      + (" (required)" if source["required"] else ""), str(source["rows"]),
                      str(source["rejected"]), str(source["seconds"]), text(source["error"] or ""))
    console.print(table)
    if report.get("incomplete"):
        console.print("[yellow]unknown, left null[/]: " + ", ".join(
            f"{column} (needs {', '.join(sources)})" for column, sources in report["incomplete"].items()))
    for path in report.get("reports", []):
        console.print(f"report: {text(path)}")
    for name, counts in report.get("destinations", {}).items():
        console.print(text(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items())))
    if report.get("error"):
        console.print(f"[red]{text(report['error'])}[/]")


def sync_verification(console: Console, report: Mapping[str, Any]) -> None:
    """A sync's verification: per object, every pair of participants compared."""
    console.print(f"\n[bold]{text(report['integration'])}[/]: participants compared")
    for name, compared in report["objects"].items():
        table = Table("participants", "compared", "equal", "differing", "missing",
                      title=text(name))
        for pair in compared["pairs"]:
            first, second = pair["participants"]
            missing = ", ".join(f"in {p} {n}" for p, n in pair["missing_in"].items())
            table.add_row(text(f"{first} / {second}"), str(pair["compared"]), str(pair["equal"]),
                          f"[red]{pair['differing']}[/]" if pair["differing"] else "0",
                          text(missing))
        console.print(table)
        for pair in compared["pairs"]:
            for sample in pair["samples"][:5]:
                console.print("  [red]≠[/] " + text(f"{sample['gid']} {sample['field']}: " + " / ".join(
                    f"{p} {json.dumps(v, default=str)}" for p, v in sample["values"].items())))
            for sample in pair["missing_samples"][:5]:
                console.print("  [red]missing[/] " + text(
                    f"in {sample['missing_in']}: {sample['gid']} ({sample['held_by']} key "
                    f"{sample['key']})"))
        held = compared["held"]
        if held["count"]:
            console.print(f"  [yellow]fields held for a person[/]: {held['count']}, not "
                          "counted as differences (patchbay conflicts list --status held)")
    colour = "green" if not report["verdict_reasons"] else "red"
    console.print(f"verdict: [{colour}]{text(report['verdict'])}[/]"
                  + "".join(f"\n  - {text(r)}" for r in report["verdict_reasons"]))


def match_run(console: Console, counts: Mapping[str, Any], written: str) -> None:
    """What `patchbay match run` found and wrote."""
    console.print(f"candidate pairs {counts['candidate_pairs']:,} (blocking kept "
                  f"{counts['blocking_share']:.4%} of {counts['possible_pairs']:,})", highlight=False)
    console.print(f"links {counts['links']:,}, review {counts['review']:,}; "
                  f"{counts['seconds']:.2f} s", highlight=False)
    console.print(f"written: {text(written)}", highlight=False)


def match_explanation(console: Console, explanation: Mapping[str, Any]) -> None:
    """One pair field by field: the values, the level they agree at, its weight; then the
    prior, the total and the decision."""
    colour = {"link": "green", "review": "yellow"}.get(explanation["decision"], "red")
    console.print(f"[bold]{text(explanation['left_id'])}[/] / [bold]{text(explanation['right_id'])}[/]"
                  + ("" if explanation["candidate"] else " (no blocking rule pairs them: never compared)"),
                  highlight=False)
    table = Table("field", "left", "right", "level", "weight (bits)")
    for evidence in explanation["fields"]:
        weight = evidence["weight"]
        shown = f"[green]{weight:+.2f}[/]" if weight > 0 else f"[red]{weight:+.2f}[/]" if weight < 0 else "0"
        table.add_row(text(evidence["field"]), text("" if evidence["left"] is None else evidence["left"]),
                      text("" if evidence["right"] is None else evidence["right"]),
                      text(evidence["level"]), shown)
    table.add_row("prior", "", "", "", f"{explanation['prior_weight']:+.2f}", end_section=True)
    table.add_row("[bold]total[/]", "", "", "", f"[bold]{explanation['match_weight']:+.2f}[/]")
    console.print(table)
    tier = explanation["tier"]
    console.print(f"probability {explanation['probability']:.6f}; decision [{colour}]"
                  f"{text(explanation['decision'])}[/]"
                  + (f" (deterministic tier {tier + 1} links it outright)" if tier is not None else ""),
                  highlight=False)


def match_profile(console: Console, settings: Sequence[Mapping[str, Any]], chosen: str) -> None:
    """Each strictness setting, strictest first: links and review pairs, and with labels
    precision, recall, missed shared records and wrong links."""
    labelled = bool(settings) and settings[0].get("precision") is not None
    columns: list[str | Column] = [Column("strictness", no_wrap=True), "link at", "links", "review"]
    if labelled:
        columns += ["precision", "recall", "missed", "wrong"]
    notes = ["strictest first; a number is a match weight in bits", "*: the definition's"]
    if labelled:
        notes += ["missed: shared records (true pairs) not linked, false negatives",
                  "wrong: links of records that are not the same, false positives"]
    table = Table(*columns, caption="; ".join(notes))
    for s in settings:
        row = [text(s["strictness"]) + (" *" if s["strictness"] == chosen else ""),
               f"{s['weight']:.1f} bits", f"{s['links']:,}", f"{s['review']:,}"]
        if labelled:
            row += [f"{s['precision']:.4f}", f"{s['recall']:.4f}", f"{s['missed']:,}", f"{s['wrong']:,}"]
        table.add_row(*row)
    console.print(table)
