"""Ctrl-C (SIGINT) stops a migration after its current batch and leaves it resumable."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.test_kill_migration import ROWS, batches_done, build_source, run_state


def test_sigint_stops_after_the_batch_and_resume_finishes(tmp_path: Path) -> None:
    build_source(tmp_path / "source.db")
    with sqlite3.connect(tmp_path / "target.db") as db:
        db.execute("CREATE TABLE people_copy (person_id INTEGER PRIMARY KEY, name TEXT)")
    spec = tmp_path / "people.yaml"
    spec.write_text("""
systems:
  legacy: sqlite:///source.db
  target: sqlite:///target.db
integrations:
  - name: people names
    pattern: migration
    source: {system: legacy, object: people, key: id}
    transform: {fields: {person_id: id, name: name}}
    destination: {system: target, object: people_copy, key: person_id}
    options: {batch_size: 2000}
""")
    process = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "run", str(spec)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state = tmp_path / ".patchbay" / "state.db"
    while batches_done(state) < 5:
        assert process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err.decode()
    assert b"patchbay resume" in out
    [(run_id, status, batches)] = run_state(tmp_path)
    assert status == "interrupted"
    assert batches < ROWS // 2000, "stopped before the end"
    assert held(tmp_path) == people(batches * 2000), \
        "the stop came after a whole batch, not mid-way: the first batches in key order, each whole"

    resumed = subprocess.run([sys.executable, "-m", "patchbay.cli", "resume", run_id, "--json"],
                             cwd=tmp_path, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()
    report = json.loads(resumed.stdout)
    assert report["run"] == run_id and report["verdict"] == "complete"
    assert report["counts"]["read"] == ROWS
    assert held(tmp_path) == people(ROWS)


def people(count: int) -> list[tuple[int, str]]:
    """The first `count` people as the migration writes them, computed apart from the source."""
    return [(i, f"person {i}") for i in range(1, count + 1)]


def held(directory: Path) -> list[tuple[int, str]]:
    """Every row of the destination, in key order (a row written twice shows twice)."""
    with sqlite3.connect(directory / "target.db") as db:
        return db.execute("SELECT person_id, name FROM people_copy ORDER BY person_id, name").fetchall()
