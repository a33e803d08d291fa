"""The `patchbay` command: run, plan, verify, resume, runs, show, schema, demo, cdc,
dead-letters, outbox, conflicts, match, review, audit, serve, worker, cluster.

Exit codes: 0 complete; 3 complete with rejects; 4 incomplete (the destination does not
match); 1 the run failed (resumable); 2 bad input (file, parameters, arguments);
130 interrupted (resumable).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from patchbay import __version__, logs, render
from patchbay.errors import (
    ChoiceRefused,
    ConnectionFailed,
    PatchbayError,
    RunNotResumable,
    SpecError,
    UnknownRun,
)
from patchbay.model import given_params
from patchbay.runtime import capture, conflicts, partitions, reviews, runner, serving
from patchbay.runtime.cluster import DEFAULT_LEASE_SECONDS, Member, cluster_status
from patchbay.runtime.runner import Invocation
from patchbay.spec import IntegrationSpec, MatchSpec, load, load_match, resolve_parameters, suggest
from patchbay.store import Store, open_state
from patchbay.store.conflicts import STATUSES, ConflictRecord
from patchbay.store.pairs import STATUSES as PAIR_STATUSES
from patchbay.store.runs import RunStatus

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REJECTS, EXIT_INCOMPLETE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
_VERDICT_EXIT = {RunStatus.COMPLETE: EXIT_OK, RunStatus.COMPLETE_WITH_REJECTS: EXIT_REJECTS,
                 RunStatus.INCOMPLETE: EXIT_INCOMPLETE, RunStatus.INTERRUPTED: EXIT_INTERRUPTED,
                 # a sync's verification (patterns/sync.py)
                 "in sync": EXIT_OK, "out of sync": EXIT_INCOMPLETE}

# Plain help (no rich panels): the panels print a flag's type as `<bool>` and any text
# as `<str>`; plain help leaves flags bare, and every option below names what it takes.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="patchbay: declared, observable integrations around Salesforce.")
console = Console()
errors = Console(stderr=True, soft_wrap=True)

FileArg = Annotated[Path, typer.Argument(help="The integration file (YAML).", metavar="FILE")]
IntegrationOpt = Annotated[str | None, typer.Option(
    "--integration", "-i", metavar="NAME",
    help="Which integration of the file (default: all of them, in dependency order).")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "--param", "-p", metavar="NAME=VALUE", help="A run parameter; repeatable.")]
StateOpt = Annotated[str | None, typer.Option(
    "--state", envvar="PATCHBAY_STATE", metavar="DIR|URL",
    help="Engine state: a directory (default .patchbay) or a database URL.")]
LeaseOpt = Annotated[float, typer.Option(
    "--lease-seconds", min=1.0, metavar="SECONDS",
    help="How long an integration's noticing stays with a process that stopped beating "
         "(killed, paused, cut off) before another process of the state takes it over; "
         "heartbeats come every third of it.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result (or the error) as JSON.")]
RunIdArg = Annotated[str, typer.Argument(metavar="RUN", help="A run id (see `patchbay runs`).")]


def main() -> None:
    logs.configure()
    app()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"patchbay {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print patchbay's version and exit.")] = False,
        log_format: Annotated[str, typer.Option(
            "--log-format", metavar="text|json",
            help="Logs on standard error: text (warnings, one line each) or json (one object "
                 "per line from info on: time, level, logger, message, run, integration, "
                 "record_key).")] = "text",
        log_values: Annotated[bool, typer.Option(
            "--log-values", help="Let logs show records' field values (never shown without "
                                 "it).")] = False) -> None:
    """patchbay: declared, observable integrations around Salesforce."""
    if log_format not in logs.FORMATS:
        raise typer.BadParameter(f"{log_format!r} is not one of {', '.join(logs.FORMATS)}",
                                 param_hint="--log-format")
    logs.configure(log_format, log_values,
                   logging.INFO if log_format == "json" else logging.WARNING)


# -- commands -----------------------------------------------------------------------------------


@app.command()
def run(file: FileArg, integration: IntegrationOpt = None, param: ParamOpt = None,
        resume: Annotated[str | None, typer.Option(metavar="RUN",
                                                   help="Resume this run id.")] = None,
        fresh: Annotated[bool, typer.Option(
            "--fresh", help="Start a new run even if an unfinished one could be resumed.")] = False,
        full: Annotated[bool, typer.Option(
            "--full", help="Ignore the incremental watermark and take the whole scope.")] = False,
        workers: Annotated[int | None, typer.Option(
            "--workers", min=0, max=64, metavar="N",
            help="Split a migration's run into key ranges worked by N worker processes "
                 "(one report for the run); 0: by the serve and worker processes sharing "
                 "the state.")] = None,
        state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Run an integration, or every integration of the file in dependency order (a migration
    resumes its unfinished run of the same definition and parameters, if any)."""
    with _handled(as_json):
        if workers is not None:
            if resume is not None:
                raise SpecError("--workers resumes the unfinished run of the same definition by "
                                "itself; leave out --resume")
            invocation = Invocation.load(file, integration, _params(param))
            raise typer.Exit(_execute_split(file, invocation, state, workers, fresh=fresh,
                                            full=full, as_json=as_json))
        if integration is None and resume is None and len(load(file).integrations) > 1:
            raise typer.Exit(_execute_all(file, _params(param), state, fresh=fresh, full=full,
                                          as_json=as_json))
        invocation = Invocation.load(file, integration, _params(param))
        raise typer.Exit(_execute(invocation, state, resume=resume, fresh=fresh, full=full,
                                  as_json=as_json))


@app.command()
def resume(run_id: RunIdArg,
           file: Annotated[Path | None, typer.Option(
               metavar="FILE", help="The integration file, if it moved since the run started.")] = None,
           state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Resume an interrupted or failed run from its last checkpoint."""
    with _handled(as_json):
        store, _ = open_state(state)
        record = store.runs.get(run_id)
        path = file or (Path(record.spec_path) if record.spec_path else None)
        if path is None:
            raise SpecError(f"run {run_id} does not say which file it came from; pass --file")
        params = given_params(record.params)
        invocation = Invocation.load(path, record.integration, params)
        raise typer.Exit(_execute(invocation, state, resume=run_id, as_json=as_json))


@app.command()
def plan(file: FileArg, integration: IntegrationOpt = None, param: ParamOpt = None,
         examples: Annotated[int, typer.Option(
             metavar="N", help="Examples shown per kind of change.")] = 3,
         state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Show what a run would do (inserts, updates, unchanged, rejects), writing nothing."""
    with _handled(as_json):
        invocation = Invocation.load(file, integration, _params(param))
        store, reports = open_state(state)
        result = runner.plan(invocation.context(store, reports), examples=examples)
        if as_json:
            console.print_json(json.dumps(result, default=str))
        else:
            render.plan(console, result)


@app.command()
def verify(file: FileArg, integration: IntegrationOpt = None, param: ParamOpt = None,
           state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Compare the destination with the source scope now, writing nothing."""
    with _handled(as_json):
        invocation = Invocation.load(file, integration, _params(param))
        store, reports = open_state(state)
        with _progress("verifying") as progress:
            report = runner.verify(invocation.context(store, reports, progress=progress))
        if as_json:
            console.print_json(json.dumps(report, default=str))
        elif report.get("pattern") == "sync":
            render.sync_verification(console, report)
        else:
            render.report(console, report)
        raise typer.Exit(_VERDICT_EXIT.get(report["verdict"], EXIT_FAILED))


@app.command("runs")
def list_runs(integration: IntegrationOpt = None,
              limit: Annotated[int, typer.Option(metavar="N", help="How many, newest first.")] = 20,
              state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """List runs, newest first."""
    with _handled(as_json):
        store, _ = open_state(state)
        records = store.runs.latest(integration, limit)
        if as_json:
            console.print_json(json.dumps([_run_summary(r) for r in records], default=str))
            return
        table = Table("integration", "status", "read", "written", "rejected", "started")
        # the id is what one copies into `show` or `resume`: never wrapped nor cut, however
        # narrow the terminal; the integration's name gives way instead
        table.columns.insert(0, Column("run", no_wrap=True, min_width=len(records[0].id)
                                       if records else None))
        for r in records:
            c = r.counters
            written = sum(c.get(k, 0) for k in ("created", "updated", "unchanged", "deleted"))
            table.add_row(r.id, render.text(r.integration), render.status_text(r.status),
                          str(c.get("read", 0)), str(written), str(c.get("rejected", 0)),
                          r.started_at.strftime("%Y-%m-%d %H:%M"))
        console.print(table)


@app.command()
def show(run_id: RunIdArg,
         rejects: Annotated[int, typer.Option(
             metavar="N", help="How many set-aside records to list.")] = 10,
         state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Show one run: status, counters, report and the records it set aside."""
    with _handled(as_json):
        store, _ = open_state(state)
        record = store.runs.get(run_id)
        set_aside = store.outcomes.of(run_id, limit=rejects)
        if as_json:
            console.print_json(json.dumps({**_run_summary(record), "report": record.report,
                                           "set_aside": set_aside}, default=str))
            return
        if record.report:
            render.report(console, record.report)
        else:
            console.print(f"run [bold]{render.text(record.id)}[/] of "
                          f"[bold]{render.text(record.integration)}[/]: "
                          f"{render.status_text(record.status)}; "
                          f"counters {render.text(dict(record.counters))}")
            if record.error:
                console.print(f"[red]error:[/] {render.text(record.error)}")
        if set_aside:
            table = Table("key", "status", "code", "reason", title="set aside")
            for row in set_aside:
                table.add_row(*(render.text(row[name] or "") for name in
                                ("record_key", "status", "code", "reason")))
            console.print(table)


@app.command()
def schema() -> None:
    """Print the JSON Schema of integration files (for editors)."""
    from patchbay.spec import json_schema

    console.print_json(json.dumps(json_schema()))


@app.command()
def serve(file: FileArg, integration: IntegrationOpt = None, param: ParamOpt = None,
          state: StateOpt = None,
          api: Annotated[bool, typer.Option(
              "--api/--no-api", help="Serve the HTTP API beside the broadcasts (bearer token "
                                     "from PATCHBAY_API_TOKEN; none: loopback only).")] = True,
          host: Annotated[str, typer.Option(metavar="ADDRESS",
                                            help="Address the API listens on.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(metavar="PORT",
                                            help="Port the API listens on.")] = 8877,
          lease_seconds: LeaseOpt = DEFAULT_LEASE_SECONDS) -> None:
    """Keep broadcasts and syncs going (notice changes and deliver), stream aggregations
    (consume and flush) and scheduled aggregations, until Ctrl-C; work the key ranges of
    migrations run with --workers, one range at a time; and serve the HTTP API (on-demand
    runs, run status, dead letters, live aggregation answers), which alone also serves a
    file without any of those. Any number of serve processes may share a PostgreSQL
    state: one at a time notices each integration's changes, all of them deliver."""
    with _handled():
        from patchbay.api import api_token, serve_api, viewer_token

        loaded = load(file).integrations
        chosen = [i for i in loaded
                  if runner.serves(i) and (integration is None or i.name == integration)]
        split = _split(loaded, integration)
        if not chosen and (not api or integration is not None) and not split:
            raise SpecError(f"{file} has no broadcast, sync, stream or scheduled aggregation "
                            "or migration integration"
                            + (f" named '{integration}'" if integration else ""))
        invocations = [Invocation.load(file, spec.name, _params(param)) for spec in chosen]
        store, reports = open_state(state)
        beside: list[Any] = []
        if api:
            token = api_token()
            server = serve_api(host, port, file, state, token=token, viewer=viewer_token(),
                               serving=[s.name for s in chosen], log_level="warning")
            beside.append(server)
            _tell(f"API on {server.url} ("
                  + ("bearer token required" if token else
                     "no PATCHBAY_API_TOKEN: open, on loopback only")
                  + f"); the console on {server.url}/ui/")
        _keep_going(invocations, store, reports, poll=True, file=file, split=split,
                    beside=beside, lease_seconds=lease_seconds)


@app.command()
def worker(file: FileArg, integration: IntegrationOpt = None, param: ParamOpt = None,
           run_id: Annotated[str | None, typer.Option(
               "--run", metavar="RUN",
               help="Work only the key ranges of this run, and end when none is left.")] = None,
           spare: Annotated[bool, typer.Option(
               "--spare", help="With --run: wait for a range whose worker stopped, take it "
                               "over, then work on like the others.")] = False,
           state: StateOpt = None, lease_seconds: LeaseOpt = DEFAULT_LEASE_SECONDS) -> None:
    """Deliver broadcasts' and syncs' outboxes (no polling) and work the key ranges of
    migrations run with --workers, until Ctrl-C: extra workers beside `patchbay serve`,
    sharing the work through an engine state on PostgreSQL."""
    with _handled():
        if run_id is not None:
            _work_ranges(file, run_id, state, spare=spare)
            return
        if spare:
            raise SpecError("--spare waits for the ranges of one run: give it --run")
        loaded = load(file).integrations
        chosen = [i for i in loaded if runner.serves(i, poll=False)
                  and (integration is None or i.name == integration)]
        split = _split(loaded, integration)
        if not chosen and not split:
            raise SpecError(f"{file} has no broadcast, sync or migration integration"
                            + (f" named '{integration}'" if integration else ""))
        store, reports = open_state(state)
        invocations = [Invocation.load(file, spec.name, _params(param)) for spec in chosen]
        _keep_going(invocations, store, reports, poll=False, file=file, split=split, beside=[],
                    lease_seconds=lease_seconds)


def _split(loaded: Sequence[IntegrationSpec], integration: str | None) -> list[IntegrationSpec]:
    """The integrations (named `integration`, if given) whose runs are split into key ranges."""
    return [i for i in loaded if runner.splits(i) and (integration is None or i.name == integration)]


class _Beside:
    """A loop in a thread of its own that `_keep_going` waits for and stops with the rest."""

    def __init__(self, loop: Callable[[threading.Event], None]) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=loop, args=(self._stop,), name="patchbay-ranges",
                                        daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _work_ranges(file: Path, run_id: str, state: str | None, *, spare: bool) -> None:
    """`worker --run`: the key ranges of one run, with the run's own parameters."""
    store, reports = open_state(state)
    stop = threading.Event()
    with _stop_on_interrupt(stop):
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            partitions.work_run(file, run_id, store, reports, stop, spare=spare)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _keep_going(invocations: list[Invocation], store: Store, reports: Path, *, poll: bool,
                file: Path, split: Sequence[IntegrationSpec], beside: list[Any],
                lease_seconds: float) -> None:
    """Keep each integration going in its own thread until Ctrl-C (or all of them end), as
    a registered member of the processes sharing the state; and the key ranges of `split`'s
    partitioned runs worked in one thread of their own, one range at a time, so that they
    take at most that thread from the process's other work (`beside`: the API's server)."""
    contexts = [i.context(store, reports, progress=_serve_progress(i.integration.name))
                for i in invocations]
    working = [i.integration.name for i in invocations]
    if split:
        names = [spec.name for spec in split]
        beside = [*beside, _Beside(
            lambda stop: partitions.pick_up(file, names, store, reports, stop))]
        working.append("the key ranges of " + ", ".join(names))
    role = "serve" if poll else "worker"
    with Member(store, role, lease_seconds) as member:
        serving.keep_going(contexts, poll=poll, member=member, beside=beside,
                           started=lambda: _tell(
                               f"{'serving' if poll else 'working'} "
                               f"{', '.join(working) or 'the API only'} as {member.id}; "
                               "Ctrl-C to stop"))


@app.command()
def cluster(state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """List the serve and worker processes sharing the engine state: their heartbeats, the
    leases they hold and the deliveries they are writing; then every lease."""
    with _handled(as_json):
        store, _ = open_state(state)
        status = cluster_status(store)
        if as_json:
            console.print_json(json.dumps(status))
            return
        table = Table(Column("process", no_wrap=True), "role", "status", "version", "started",
                      "heartbeat", "leases", "delivering", title="processes")
        for p in status["processes"]:
            table.add_row(render.text(p["id"]), p["role"], _member_status(p["status"]),
                          render.text(p["version"]), p["started_at"][:19].replace("T", " "),
                          f"{p['heartbeat_age_seconds']:.0f} s ago",
                          render.text(", ".join(p["leases"]) or "-"), str(p["delivering"]))
        console.print(table)
        leases = Table(Column("lease", no_wrap=True), Column("holder", no_wrap=True), "token",
                       "expires", title="leases")
        for lease in status["leases"]:
            leases.add_row(render.text(lease["name"]),
                           render.text(lease["holder"] or "-"), str(lease["token"]),
                           "expired" if lease["expired"] else
                           lease["expires_at"][:19].replace("T", " "))
        console.print(leases)


def _member_status(status: str) -> str:
    return {"running": "[green]running[/]", "gone": "[red]gone[/]"}.get(status, status)


def _serve_progress(name: str) -> Any:
    def report(event: str, counters: Mapping[str, int]) -> None:
        if any(counters.values()):
            _tell(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counters.items() if v),
                  integration=name)
    return report


def _tell(message: str, integration: str | None = None) -> None:
    """A message of a long-running command to the person watching it, or, with
    `--log-format json`, a log line like every other."""
    if logs.structured():
        logging.getLogger("patchbay.cli").info(message, extra={"integration": integration})
    else:
        errors.print(render.text(message), highlight=False)


dead_letters = typer.Typer(help="Deliveries that failed for good: list, show, replay, discard.",
                           no_args_is_help=True)
app.add_typer(dead_letters, name="dead-letters")


@dead_letters.command("list")
def dead_letters_list(integration: IntegrationOpt = None,
                      destination: Annotated[str | None, typer.Option(
                          metavar="NAME", help="Only this destination.")] = None,
                      limit: Annotated[int, typer.Option(metavar="N", help="How many.")] = 50,
                      state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """List dead letters, oldest first."""
    with _handled(as_json):
        store, _ = open_state(state)
        letters = store.outbox.dead_letters(integration, destination, limit)
        if as_json:
            console.print_json(json.dumps([_letter(d) for d in letters], default=str))
            return
        table = Table("id", "integration", "destination", "record", "attempts", "error")
        for d in letters:
            table.add_row(str(d.id), render.text(d.integration), render.text(d.destination),
                          render.text(d.record_key), str(d.attempts),
                          render.text(d.last_error or ""))
        console.print(table)


@dead_letters.command("show")
def dead_letters_show(ids: Annotated[list[int], typer.Argument(help="Dead letter ids.")],
                      state: StateOpt = None) -> None:
    """Show dead letters whole, payload included."""
    with _handled():
        store, _ = open_state(state)
        for delivery_id in ids:
            found = store.outbox.get(delivery_id)
            if found is None:
                raise SpecError(f"no delivery {delivery_id}")
            console.print_json(json.dumps(_letter(found), default=str))


@dead_letters.command("replay")
def dead_letters_replay(ids: Annotated[list[int], typer.Argument(help="Dead letter ids.")],
                        state: StateOpt = None) -> None:
    """Send dead letters again (the next delivery round picks them up)."""
    with _handled():
        store, _ = open_state(state)
        console.print(f"{store.outbox.replay(ids)} dead letters queued again")


@dead_letters.command("discard")
def dead_letters_discard(ids: Annotated[list[int], typer.Argument(help="Dead letter ids.")],
                         state: StateOpt = None) -> None:
    """Give up on dead letters for good (unblocks later changes of their records)."""
    with _handled():
        store, _ = open_state(state)
        console.print(f"{store.outbox.discard(ids)} dead letters discarded")


conflicts_app = typer.Typer(help="A sync's conflicts: list, show, and resolve those held for a "
                                 "person (policy manual).", no_args_is_help=True)
app.add_typer(conflicts_app, name="conflicts")

ConflictIdArg = Annotated[int, typer.Argument(metavar="ID",
                                              help="A conflict id (see `patchbay conflicts list`).")]


@conflicts_app.command("list")
def conflicts_list(integration: IntegrationOpt = None,
                   status: Annotated[str | None, typer.Option(
                       metavar="|".join(STATUSES),
                       help="Only these: settled (by the field's policy), held (waiting for a "
                            "person), chosen (by a person, applied at the sync's next round), "
                            "resolved (applied).")] = None,
                   limit: Annotated[int, typer.Option(metavar="N", min=1,
                                                      help="How many, newest first.")] = 50,
                   state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """List a sync's conflicts, newest first."""
    with _handled(as_json):
        if status is not None and status not in STATUSES:
            raise SpecError(f"--status {status!r} is not one of {', '.join(STATUSES)}"
                            f"{suggest(status, STATUSES)}")
        store, _ = open_state(state)
        found = store.conflicts.list(integration, status, limit)
        if as_json:
            console.print_json(json.dumps([c.to_json() for c in found], default=str))
            return
        table = Table("integration", "object", "record", "field", "policy", "status",
                      "values", "when")
        # the id is what one copies into `show` or `resolve`: never wrapped nor cut
        table.columns.insert(0, Column("id", no_wrap=True))
        for c in found:
            table.add_row(str(c.id), render.text(c.integration), render.text(c.object),
                          render.text(c.gid), render.text(c.field or c.kind), render.text(c.policy),
                          _conflict_status(c), render.text(_values(c)),
                          c.created_at.strftime("%Y-%m-%d %H:%M"))
        console.print(table)


@conflicts_app.command("show")
def conflicts_show(conflict_id: ConflictIdArg, state: StateOpt = None,
                   as_json: JsonOpt = False) -> None:
    """Show one conflict: every candidate value, the policy, who won or who chose what, when."""
    with _handled(as_json):
        store, _ = open_state(state)
        c = conflicts.find(store, conflict_id)
        if as_json:
            console.print_json(json.dumps(c.to_json(), default=str))
            return
        what = f"field [bold]{render.text(c.field)}[/]" if c.field else render.text(c.kind)
        console.print(f"conflict {c.id} of [bold]{render.text(c.integration)}[/]: {what} of "
                      f"{render.text(c.object)} {render.text(c.gid)}", highlight=False)
        console.print(f"policy {render.text(c.policy)}, {_conflict_status(c)}, since "
                      f"{c.created_at:%Y-%m-%d %H:%M:%S}", highlight=False)
        table = Table("participant", "value")
        for participant, value in c.candidates.items():
            mark = " [green](stands)[/]" if participant == c.winner else ""
            table.add_row(render.text(participant) + mark, render.text(_shown(value)))
        console.print(table)
        if c.status in ("chosen", "resolved"):
            console.print(f"chosen by {render.text(c.resolved_by or 'unknown')}: "
                          f"{render.text(_shown(c.chosen))}"
                          + (f", applied {c.resolved_at:%Y-%m-%d %H:%M:%S}"
                             if c.status == "resolved" and c.resolved_at else
                             "; " + conflicts.APPLIED_LATER), highlight=False)
        elif c.status == "settled" and c.resolved_at:
            console.print(f"settled by the policy {c.resolved_at:%Y-%m-%d %H:%M:%S}",
                          highlight=False)
        else:
            console.print(f"resolve with: patchbay conflicts resolve {c.id} --pick PARTICIPANT "
                          "(or --value VALUE)", highlight=False)


@conflicts_app.command("resolve")
def conflicts_resolve(conflict_id: ConflictIdArg,
                      value: Annotated[str | None, typer.Option(
                          metavar="VALUE", help="The value (JSON when it parses as JSON: 42, "
                                                "true, null, \"42\"; else the text).")] = None,
                      pick: Annotated[str | None, typer.Option(
                          metavar="PARTICIPANT", help="Take the value this participant had.")] = None,
                      by: Annotated[str | None, typer.Option(
                          metavar="NAME", help="Who chose (default: your login name).")] = None,
                      state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Settle a conflict held for a person: the sync writes the value to every participant on
    its next round."""
    with _handled(as_json):
        if (value is None) == (pick is None):
            raise SpecError("give the value with --value VALUE, or --pick PARTICIPANT to take "
                            "the value a participant had (one of them)")
        store, _ = open_state(state)
        chosen = conflicts.choose(store, conflict_id, pick=pick, by=by or _login(),
                                  value=None if value is None else conflicts.value_of(value))
        if as_json:
            console.print_json(json.dumps(chosen.to_json(), default=str))
            return
        console.print(f"conflict {chosen.id}: {render.text(chosen.field)} of "
                      f"{render.text(chosen.object)} {render.text(chosen.gid)} set to "
                      f"{render.text(_shown(chosen.chosen))} by {render.text(chosen.resolved_by)}; "
                      f"{conflicts.APPLIED_LATER}", highlight=False)


def _conflict_status(c: ConflictRecord) -> str:
    colour = {"held": "yellow", "chosen": "cyan", "resolved": "green"}.get(c.status, "white")
    won = f" ({render.text(c.winner)})" if c.winner else ""
    return f"[{colour}]{render.text(c.status)}[/]{won}"


def _shown(value: Any) -> str:
    """A value as JSON, so that text, a number and null read apart ("42", 42, null)."""
    return json.dumps(value, default=str, ensure_ascii=False)


def _values(c: ConflictRecord) -> str:
    if c.kind == "match":
        return f"{c.candidates.get('participant')} {c.candidates.get('key')}: " \
               f"{len(c.candidates.get('gids') or [])} candidates"
    return ", ".join(f"{p}: {_shown(v)}" for p, v in c.candidates.items())


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor the password database
        return "cli"


review_app = typer.Typer(help="A correlation's pairs: list those the matcher is unsure of, explain "
                              "one, accept or reject it.", no_args_is_help=True)
app.add_typer(review_app, name="review")

CorrelationArg = Annotated[str, typer.Argument(metavar="INTEGRATION", help="The correlation's name.")]
LeftKeyArg = Annotated[str, typer.Argument(metavar="LEFT_KEY",
                                           help="The key of the pair's record on the first side.")]
RightKeyArg = Annotated[str, typer.Argument(metavar="RIGHT_KEY",
                                            help="The key of the pair's record on the second side.")]
ByOpt = Annotated[str | None, typer.Option(metavar="NAME",
                                           help="Who decided (default: your login name).")]


@review_app.command("list")
def review_list(integration: IntegrationOpt = None,
                status: Annotated[str | None, typer.Option(
                    metavar="|".join(PAIR_STATUSES),
                    help="Only these: link (linked by the matcher), review (waiting for a "
                         "person), accepted, rejected (by a person), dropped (linked once, no "
                         "longer).")] = None,
                limit: Annotated[int, typer.Option(metavar="N", min=1, max=1000,
                                                   help="How many, best weight first.")] = 50,
                offset: Annotated[int, typer.Option(metavar="N", min=0, max=1_000_000,
                                                    help="How many to skip.")] = 0,
                state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """List a correlation's pairs, best weight first: keys and scores only, never a value of
    either record."""
    with _handled(as_json):
        reviews.check_status(status)
        store, _ = open_state(state)
        if integration is not None:
            reviews.held(store, integration)
        found = store.pairs.list(integration, status, limit, offset)
        if as_json:
            console.print_json(json.dumps([p.to_json() for p in found], default=str))
            return
        table = Table("integration", Column("left key", no_wrap=True),
                      Column("right key", no_wrap=True), "status", "weight", "probability",
                      "decided by")
        for p in found:
            table.add_row(render.text(p.integration), render.text(p.left), render.text(p.right),
                          render.text(p.status), _score(p.weight, "+.2f"),
                          _score(p.probability, ".4f"), render.text(p.decided_by or ""))
        console.print(table)


@review_app.command("show")
def review_show(integration: CorrelationArg, left: LeftKeyArg, right: RightKeyArg,
                file: Annotated[Path | None, typer.Option(
                    "--file", "-f", metavar="FILE",
                    help="The integration file: explain the pair from its two records as they "
                         "are now.")] = None,
                param: ParamOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """Show one pair: its status, weight and probability; with --file, why, field by field
    (each compared field's value in both records, the level they agree at, its weight).
    This prints the compared values of the pair's two records, read from their systems:
    deciding whether they are the same person or thing is the reviewer's job."""
    with _handled(as_json):
        store, reports_dir = open_state(state)
        pair = reviews.find(store, integration, left, right)
        explanation = None
        if file is not None:
            invocation = Invocation.load(file, integration, _params(param))
            explanation = reviews.explain(invocation.context(store, reports_dir), left, right)
        if as_json:
            console.print_json(json.dumps({
                **pair.to_json(),
                "explanation": explanation.to_json() if explanation is not None else None},
                default=str))
            return
        console.print(f"pair {render.text(pair.left)} / {render.text(pair.right)} of "
                      f"[bold]{render.text(integration)}[/]: {render.text(pair.status)}"
                      + (f" by {render.text(pair.decided_by)}" if pair.decided_by else "")
                      + f", weight {_score(pair.weight, '+.2f')}, probability "
                        f"{_score(pair.probability, '.4f')}", highlight=False)
        if explanation is not None:
            console.print("as the records are now:", highlight=False)
            render.match_explanation(console, explanation.to_json())
        else:
            console.print("explain it with: --file FILE (the integration file)", highlight=False)
        if pair.status in ("review", "link", "dropped"):
            console.print("decide with: patchbay review accept|reject "
                          f"{_quoted(integration)} {_quoted(left)} {_quoted(right)}",
                          highlight=False)


def _decide(decision: str, integration: str, left: str, right: str, by: str | None,
            state: str | None, as_json: bool) -> None:
    with _handled(as_json):
        store, _ = open_state(state)
        pair = reviews.decide(store, integration, left, right, decision, by or _login())
        if as_json:
            console.print_json(json.dumps({**pair.to_json(), "applied": reviews.APPLIED_LATER},
                                          default=str))
            return
        console.print(f"pair {render.text(pair.left)} / {render.text(pair.right)} of "
                      f"{render.text(integration)} {decision} by {render.text(pair.decided_by)}, "
                      f"kept over every later match; {reviews.APPLIED_LATER}", highlight=False)


@review_app.command("accept")
def review_accept(integration: CorrelationArg, left: LeftKeyArg, right: RightKeyArg,
                  by: ByOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """The pair's records are the same: link them (their shared fields cross from the next
    match on), whatever a later match says."""
    _decide("accepted", integration, left, right, by, state, as_json)


@review_app.command("reject")
def review_reject(integration: CorrelationArg, left: LeftKeyArg, right: RightKeyArg,
                  by: ByOpt = None, state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """The pair's records differ: never link them (a link is dropped at the next match),
    whatever a later match says."""
    _decide("rejected", integration, left, right, by, state, as_json)


def _score(value: float | None, form: str) -> str:
    return "" if value is None else format(value, form)


def _quoted(text: str) -> str:
    """An argument as one copies it into a shell: quoted when it holds more than a word."""
    plain = bool(text) and all(c.isalnum() or c in "-_.@:/" for c in text)
    return render.text(text if plain else "'" + text.replace("'", "'\\''") + "'")


@app.command()
def audit(integration: CorrelationArg,
          key: Annotated[str | None, typer.Option(
              metavar="KEY", help="Only what crossed to or from this record (its key on "
                                  "either side).")] = None,
          field: Annotated[str | None, typer.Option(metavar="FIELD",
                                                    help="Only this shared field.")] = None,
          since: Annotated[str | None, typer.Option(
              metavar="ISO", help="Only since this time (ISO 8601; UTC unless it says).")] = None,
          limit: Annotated[int, typer.Option(metavar="N", min=1, max=1000,
                                             help="How many, newest first.")] = 100,
          state: StateOpt = None, as_json: JsonOpt = False) -> None:
    """A correlation's audit ledger, newest first: each shared field that crossed, from which
    record to which, when, under which match weight (the values stay in the systems), and
    each pair linked or whose link was dropped."""
    with _handled(as_json):
        moment = reviews.since_of(since)
        store, _ = open_state(state)
        reviews.held(store, integration)
        entries = store.pairs.ledger(integration, key=key, field=field, since=moment, limit=limit)
        if as_json:
            console.print_json(json.dumps(entries, default=str))
            return
        table = Table("when", "event", "field", "from", Column("from key", no_wrap=True), "to",
                      Column("to key", no_wrap=True), "weight")
        for e in entries:
            when = str(e["at"])[:19].replace("T", " ")  # to the second, as the other tables
            table.add_row(render.text(when), render.text(e["event"]), render.text(e["field"]),
                          render.text(e["source"]),
                          render.text(e["source_key"]), render.text(e["target"]),
                          render.text(e["target_key"]), _score(e["weight"], "+.2f"))
        console.print(table)


outbox_app = typer.Typer(help="The broadcast outbox: purge what was delivered long ago.",
                         no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("purge")
def outbox_purge(older_than: Annotated[str, typer.Option(
                     metavar="AGE", help="Age of the deliveries to forget: 30m, 12h, 7d.")] = "7d",
                 integration: IntegrationOpt = None, state: StateOpt = None) -> None:
    """Delete deliveries made (and dead letters discarded) longer ago than --older-than.
    Pending deliveries and dead letters are kept. `serve` does this on its own, by the
    broadcast's keep_delivered_hours option."""
    with _handled():
        age = _duration(older_than)
        store, _ = open_state(state)
        console.print(f"{store.outbox.purge(age, integration)} deliveries purged")


def _duration(text: str) -> dt.timedelta:
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:].lower()
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if unit not in units or amount < 0:
        raise SpecError(f"--older-than {text!r} is not a duration like 30m, 12h or 7d")
    return dt.timedelta(**{units[unit]: amount})


def _letter(delivery: Any) -> dict[str, Any]:
    return {name: getattr(delivery, name) for name in (
        "id", "integration", "destination", "record_key", "version", "operation", "status",
        "attempts", "last_error", "created_at", "payload")}


cdc = typer.Typer(help="PostgreSQL and MySQL/MariaDB change capture for the integrations reading "
                       "through it (broadcasts with trigger.changes: cdc): install, status, "
                       "remove.", no_args_is_help=True)
app.add_typer(cdc, name="cdc")


@cdc.command("install")
def cdc_install(file: FileArg, integration: IntegrationOpt = None, param: ParamOpt = None) -> None:
    """Capture the changes of each table an integration reads through change capture: triggers
    write them into a capture table of its PostgreSQL or MySQL/MariaDB database. Installing
    again changes nothing (on MySQL/MariaDB, it regenerates triggers whose columns changed)."""
    with _handled():
        for target, done in capture.install(file, integration, _params(param), _skipped):
            console.print(f"[bold]{render.text(target.integration.name)}[/]: capturing {done.table} "
                          f"of system '{target.connector.name}' by {', '.join(done.key)}; "
                          f"trigger {done.trigger}, "
                          + ("consumer registered" if done.registered else "consumer already registered"),
                          highlight=False)


@cdc.command("remove")
def cdc_remove(file: FileArg, integration: IntegrationOpt = None) -> None:
    """Stop capturing for each integration reading through change capture (PostgreSQL,
    MySQL/MariaDB): its changes not yet read are dropped, and a table's trigger goes with its
    last consumer."""
    with _handled():
        for target, done in capture.remove(file, integration, _skipped):
            name = render.text(target.integration.name)
            if not done.unregistered:
                console.print(f"[bold]{name}[/]: {done.table} was not captured for it",
                              highlight=False)
                continue
            trigger = ("trigger dropped" if done.trigger_dropped else
                       f"trigger kept for {done.consumers_left} other consumer(s)"
                       if done.consumers_left else "no trigger left to drop")
            console.print(f"[bold]{name}[/]: capture of {done.table} removed; "
                          f"{done.dropped_rows} pending changes dropped, {trigger}", highlight=False)


@cdc.command("status")
def cdc_status(file: FileArg) -> None:
    """Show, for each table an integration reads through change capture (PostgreSQL,
    MySQL/MariaDB), whether it is captured, how many changes wait to be read and since when."""
    with _handled():
        table = Table("integration", "table", "capture", "pending", "oldest pending",
                      caption="pending: captured changes not yet consumed, the last batch read "
                              "included (it is consumed at the next poll)")
        for target, name, state in capture.status(file, _skipped):
            if name is None:
                capture_text = "[red]no such table[/]"
            elif state is None:
                capture_text = "[yellow]not installed[/]"
            else:
                capture_text = "installed" if state.installed else "[red]trigger missing[/]"
            oldest = state.oldest.strftime("%Y-%m-%d %H:%M:%S") if state and state.oldest else ""
            table.add_row(render.text(target.integration.name), render.text(name or target.object),
                          capture_text, str(state.pending if state else 0), oldest)
        console.print(table)


def _skipped(message: str) -> None:
    errors.print(f"skipped: {render.text(message)}", highlight=False)


match_app = typer.Typer(
    help="Which records of two record sets (CSV or Parquet files) are the same, under a match "
         "definition (a YAML file whose top level is what an integration's `match:` holds): run, "
         "explain, profile. One record set alone: its duplicates.", no_args_is_help=True)
app.add_typer(match_app, name="match")

MatchDefArg = Annotated[Path, typer.Argument(
    metavar="DEF", help="The match definition (YAML: id, fields, blocking, ...).")]
LeftArg = Annotated[Path, typer.Argument(metavar="LEFT", help="The left record set (.csv or .parquet).")]
RightArg = Annotated[Path | None, typer.Argument(
    metavar="RIGHT", help="The right record set (.csv or .parquet); none: the duplicates inside LEFT.")]
IdOpt = Annotated[str | None, typer.Option(
    "--id", metavar="COLUMN", help="The id column of both record sets (default: the definition's id).")]
StrictnessOpt = Annotated[str | None, typer.Option(
    metavar="strict|balanced|lax|NUMBER",
    help="Where a pair becomes a link (default: the definition's): a preset, a probability "
         "between 0 and 1, or a match weight in bits.")]


@match_app.command("run")
def match_run(definition: MatchDefArg, left: LeftArg, out: Annotated[Path, typer.Option(
                  metavar="FILE.csv|FILE.parquet",
                  help="Where the pairs go: every candidate pair with its match weight, "
                       "probability, each field's level and decision (link, review, none).")],
              right: RightArg = None, strictness: StrictnessOpt = None, id_column: IdOpt = None,
              links_only: Annotated[bool, typer.Option(
                  "--links-only", help="Write only the linked pairs, as the columns rec_id_a, "
                                       "rec_id_b.")] = False,
              as_json: JsonOpt = False) -> None:
    """Find the pairs of records that are the same and write them with their scores."""
    with _handled(as_json):
        from patchbay.runtime import matching

        spec, chosen = _match_definition(definition, id_column), matching.strictness_of(strictness)
        matching.output_format(out)
        fitted = matching.fit(spec, left, right)
        started = time.perf_counter()
        pairs = matching.scored_pairs(fitted.matcher, chosen)
        counts = matching.summary(fitted, pairs, fitted.seconds + time.perf_counter() - started)
        matching.write(matching.link_pairs(pairs) if links_only else pairs, out)
        if as_json:
            console.print_json(json.dumps({**counts, "written": str(out)}))
        else:
            render.match_run(console, counts, str(out))


@match_app.command("explain")
def match_explain(definition: MatchDefArg,
                  given: Annotated[list[str], typer.Argument(
                      metavar="LEFT [RIGHT] A_ID B_ID",
                      help="The record sets (one alone: pairs inside it), then the pair's ids: "
                           "A_ID of LEFT, B_ID of RIGHT.")],
                  strictness: StrictnessOpt = None, id_column: IdOpt = None,
                  as_json: JsonOpt = False) -> None:
    """Why a pair is (or is not) a link: each field's values, the level they agree at and
    its weight; the prior, the total weight, the probability and the decision."""
    with _handled(as_json):
        from patchbay.runtime import matching

        if len(given) not in (3, 4):
            raise SpecError("explain takes LEFT [RIGHT] A_ID B_ID: one or two record sets, "
                            f"then two ids; got {len(given)} arguments")
        *paths, a_id, b_id = given
        spec, chosen = _match_definition(definition, id_column), matching.strictness_of(strictness)
        fitted = matching.fit(spec, Path(paths[0]), Path(paths[1]) if len(paths) == 2 else None)
        explanation = fitted.matcher.explain(matching.record_id(fitted, "left", a_id),
                                             matching.record_id(fitted, "right", b_id), chosen)
        if as_json:
            console.print_json(json.dumps(explanation.to_json(), default=str))
        else:
            render.match_explanation(console, explanation.to_json())


@match_app.command("profile")
def match_profile(definition: MatchDefArg, left: LeftArg, right: RightArg = None,
                  labels: Annotated[Path | None, typer.Option(
                      metavar="FILE.csv", help="A labelled sample: true pairs as rec_id_a, "
                                               "rec_id_b; adds precision, recall, missed shared "
                                               "records and wrong links.")] = None,
                  id_column: IdOpt = None, as_json: JsonOpt = False) -> None:
    """What each strictness setting (the presets and a few match weights) links and sends to
    review, from one fit; with a labelled sample, how right it is."""
    with _handled(as_json):
        from patchbay.runtime import matching

        spec = _match_definition(definition, id_column)
        fitted = matching.fit(spec, left, right)
        truth = None if labels is None else matching.read_labels(labels, fitted.dedup)
        settings = [s.to_json() for s in matching.profile(fitted, truth)]
        if as_json:
            console.print_json(json.dumps(settings))
        else:
            own = spec.strictness if isinstance(spec.strictness, str) else f"{spec.strictness:g}"
            render.match_profile(console, settings, own)


def _match_definition(path: Path, id_column: str | None) -> MatchSpec:
    spec = load_match(path)
    if id_column is not None:
        spec = spec.model_copy(update={"id": id_column})
        if id_column in spec.fields:
            raise SpecError(f"--id {id_column}: the id column cannot be a compared field")
    return spec


@app.command()
def localorg(port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8299,
             host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to listen on (loopback "
                                               "unless --allow-remote).")] = "127.0.0.1",
             schema_file: Annotated[Path | None, typer.Option(
                 "--schema", metavar="FILE", help="Custom objects and fields (JSON).")] = None,
             database: Annotated[str, typer.Option(
                 "--db", metavar="FILE",
                 help="SQLite file for the records (default: in memory).")] = ":memory:",
             control_token: Annotated[str | None, typer.Option(
                 metavar="TOKEN", help="Bearer token of the control API under /_emulator/ (default: "
                                       "a new random one, printed at start).")] = None,
             allow_remote: Annotated[bool, typer.Option(
                 help="Listen on an address other machines can reach.")] = False,
             ) -> None:
    """Serve a Salesforce-compatible local org (REST, SOAP login, OAuth, Bulk 2.0): a test
    tool with fixed credentials, not a place for real data."""
    from patchbay.localorg import OrgConfig, is_loopback, serve

    if not (allow_remote or is_loopback(host)):
        raise typer.BadParameter(f"{host} is not a loopback address; the local org is a test "
                                 "tool: add --allow-remote to listen beyond this machine",
                                 param_hint="--host")
    config = OrgConfig(custom_schema=schema_file, database=database)
    if control_token is not None:
        config.control_token = control_token
    user, app_ = config.users[0], config.apps[0]
    errors.print(f"local org on http://{host}:{port}  user {user.username} / password "
                 f"{user.password} / token {user.security_token}; connected app "
                 f"{app_.consumer_key} / {app_.consumer_secret}; control API token "
                 f"{config.control_token}")
    serve(host, port, config, allow_remote)


@app.command()
def demo(directory: Annotated[Path, typer.Option(metavar="DIR",
                                                 help="Where the demo writes its files.")] =
         Path("demo-output")) -> None:
    """Run the bundled demo: a legacy CRM migrated into SQLite, with its report."""
    from patchbay.demo.run import run_demo

    with _handled():
        raise typer.Exit(run_demo(directory, console))


# -- running with progress and Ctrl-C ----------------------------------------------------------


def _execute(invocation: Invocation, state: str | None, *, resume: str | None = None,
             fresh: bool = False, full: bool = False, as_json: bool = False) -> int:
    report = _run_one(invocation, state, resume=resume, fresh=fresh, full=full, quiet=as_json)
    if as_json:
        console.print_json(json.dumps(report, default=str))
    else:
        _show_report(report)
    return _exit_code(report)


def _execute_split(file: Path, invocation: Invocation, state: str | None, workers: int, *,
                   fresh: bool, full: bool, as_json: bool) -> int:
    """`run --workers N`: the run split into key ranges, worked by N `patchbay worker --run`
    processes on the same state; one report."""
    store, reports = open_state(state)
    where = ["--state", state] if state is not None else []

    def command(run_id: str, spare: bool) -> list[str]:
        return [sys.executable, "-m", "patchbay.cli", "worker", str(file.resolve()),
                "--run", run_id, *(["--spare"] if spare else []), *where]

    stop = threading.Event()
    with _stop_on_interrupt(stop):
        ctx = invocation.context(store, reports, stop=stop)
        try:
            report = partitions.run(ctx, workers=workers, worker_command=command, fresh=fresh,
                                    full=full, say=_say)
        finally:
            ctx.systems.close()
    if as_json:
        console.print_json(json.dumps(report, default=str))
    else:
        _show_report(report)
    return _exit_code(report)


def _execute_all(file: Path, given: Mapping[str, str], state: str | None, *, fresh: bool,
                 full: bool, as_json: bool) -> int:
    """Run every integration of the file, each after those it looks records up from, and stop
    at the first that does not end complete (with or without rejects). Every parameter goes
    to the integrations that declare it; all are checked before anything runs."""
    loaded = load(file)
    order = runner.in_dependency_order(loaded)
    declared = {name for i in order for name in i.parameters}
    unknown = [name for name in given if name not in declared]
    if unknown:
        raise SpecError(f"unknown parameter '{unknown[0]}': no integration of {file} declares "
                        f"it{suggest(unknown[0], declared)}")
    invocations = [Invocation(loaded, i, resolve_parameters(
        i, {k: v for k, v in given.items() if k in i.parameters})) for i in order]
    reports, code = [], EXIT_OK
    for number, invocation in enumerate(invocations, 1):
        if not as_json:
            errors.print(f"[bold]{number}/{len(invocations)}[/] "
                         f"{render.text(invocation.integration.name)}", highlight=False)
        report = _run_one(invocation, state, fresh=fresh, full=full, quiet=as_json)
        reports.append(report)
        if not as_json:
            _show_report(report)
        code = max(code, _exit_code(report))
        if code not in (EXIT_OK, EXIT_REJECTS):
            left = [i.integration.name for i in invocations[number:]]
            if left and not as_json:
                errors.print(f"[red]stopped:[/] {render.text(invocation.integration.name)} did "
                             f"not complete; not run: {render.text(', '.join(left))}",
                             highlight=False)
            break
    if as_json:
        console.print_json(json.dumps(reports, default=str))
    return code


def _run_one(invocation: Invocation, state: str | None, *, resume: str | None = None,
             fresh: bool = False, full: bool = False, quiet: bool = False) -> dict[str, Any]:
    store, reports = open_state(state)
    stop = threading.Event()
    with _stop_on_interrupt(stop), _progress(invocation.integration.name, quiet=quiet) as progress:
        ctx = invocation.context(store, reports, progress=progress, stop=stop)
        return runner.run(ctx, resume=resume, fresh=fresh, full=full, say=_say)


def _say(message: str) -> None:
    _tell(message)


def _show_report(report: Mapping[str, Any]) -> None:
    if report.get("pattern") == "aggregation":
        render.aggregation(console, report)
    elif report.get("pattern") == "broadcast":
        render.broadcast(console, report)
    elif report.get("status") == RunStatus.INTERRUPTED:
        console.print(f"[yellow]interrupted[/] after {report['counters'].get('read', 0)} records; "
                      f"continue with: patchbay resume {report['run']}")
    elif report.get("pattern") in (None, "migration"):
        render.report(console, report)
    else:  # a stream aggregation's, or a plug-in pattern's: no view of its own
        console.print_json(json.dumps(report, default=str))


def _exit_code(report: Mapping[str, Any]) -> int:
    if report.get("pattern") == "aggregation":
        return {"complete": EXIT_OK, "failed": EXIT_FAILED}.get(report["status"], EXIT_REJECTS)
    if report.get("pattern") == "stream aggregation":
        return EXIT_FAILED if report["errors"] else EXIT_REJECTS if report["rejected"] else EXIT_OK
    if report.get("pattern") == "broadcast":
        return EXIT_REJECTS if report["dead"] else EXIT_OK
    return _VERDICT_EXIT.get(report.get("verdict") or report.get("status", ""), EXIT_FAILED)


@contextmanager
def _stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C: finish the current batch and stop resumable. Second: stop at once."""
    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        errors.print("[yellow]stopping after the current batch (Ctrl-C again to abort)…[/]")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _ProgressBar:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task = progress, task
        self.started = time.monotonic()

    def __call__(self, event: str, counters: Mapping[str, int]) -> None:
        if event == "scope":
            self.progress.update(self.task, total=counters["in_scope"])
            return
        read = counters.get("read", 0)
        rate = read / max(time.monotonic() - self.started, 1e-6)
        self.progress.update(self.task, completed=read, rate=f"{rate:,.0f} records/s",
                             rejected=counters.get("rejected", 0))


@contextmanager
def _progress(label: str, quiet: bool = False) -> Iterator[_ProgressBar | None]:
    if quiet or logs.structured() or not errors.is_terminal:  # no bar among JSON lines
        yield None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TextColumn("rejected {task.fields[rejected]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True) as progress:
        task = progress.add_task(label, total=None, rate="", rejected=0)
        yield _ProgressBar(progress, task)


# -- helpers ------------------------------------------------------------------------------------


def _params(given: list[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in given or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SpecError(f"--param takes NAME=VALUE, not {item!r}")
        params[name.strip()] = value
    return params


@contextmanager
def _handled(as_json: bool = False) -> Iterator[None]:
    """Errors become one clear message and an exit code, never a traceback; with --json, a
    JSON object on standard output: {"error": ..., "problems": [...], "exit": code}."""
    try:
        yield
    except (SpecError, UnknownRun, ChoiceRefused) as exc:
        _fail(exc, EXIT_BAD_INPUT, "error", as_json)
    except (ConnectionFailed, RunNotResumable) as exc:
        _fail(exc, EXIT_FAILED, "error", as_json)
    except PatchbayError as exc:
        _fail(exc, EXIT_FAILED, "run failed", as_json)


def _fail(exc: PatchbayError, code: int, label: str, as_json: bool) -> NoReturn:
    if as_json:
        problems = exc.problems if isinstance(exc, SpecError) else [str(exc)]
        typer.echo(json.dumps({"error": exc.message if isinstance(exc, SpecError) else str(exc),
                               "problems": problems, "exit": code}))
    else:
        errors.print(f"[red]{label}:[/] {render.text(exc)}", highlight=False)
    raise typer.Exit(code) from None


def _run_summary(record: Any) -> dict[str, Any]:
    return {"run": record.id, "integration": record.integration, "status": record.status,
            "counters": record.counters, "started_at": record.started_at,
            "finished_at": record.finished_at, "error": record.error}


if __name__ == "__main__":
    main()
