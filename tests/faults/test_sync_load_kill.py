"""SIGKILL a sync's first run in the middle of its initial load, then let a plain re-run
resume it.

Two SQLite tables hold 3,000 records each, none matching. The first run reads both whole,
then loads each side's records into the other a small batch at a time; it is killed once
the second table holds some of the first's records but not all. The re-run must finish
the load from its last checkpoint: each table ends holding all 6,000 records exactly once,
each with its gid, the gids the same on both sides; and the run after that has nothing to
write (the load's echoes are known).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from patchbay import run_integration

RECORDS = 3000
NAME = "people - sync"
DDL = """PRAGMA journal_mode=WAL;
CREATE TABLE people (id INTEGER PRIMARY KEY AUTOINCREMENT, nkey TEXT, name TEXT,
  patchbay_id TEXT UNIQUE, seq INTEGER);
CREATE TABLE clock (n INTEGER); INSERT INTO clock VALUES (0);
CREATE TRIGGER people_created AFTER INSERT ON people BEGIN UPDATE clock SET n = n + 1;
  UPDATE people SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;
CREATE TRIGGER people_changed AFTER UPDATE OF nkey, name, patchbay_id ON people
  BEGIN UPDATE clock SET n = n + 1; UPDATE people SET seq = (SELECT n FROM clock)
  WHERE id = NEW.id; END;"""


def write_spec(directory: Path) -> Path:
    side = "{object: people, key: id, external_id: patchbay_id, watermark: seq, " \
           "fields: [nkey, name]}"
    spec = directory / "sync.yaml"
    spec.write_text(f"""
systems:
  east: sqlite:///east.db
  west: sqlite:///west.db
integrations:
  - name: {NAME}
    pattern: sync
    trigger: {{poll_seconds: 0.1, overlap_seconds: 0}}
    participants:
      - {{name: east, system: east}}
      - {{name: west, system: west}}
    objects:
      - name: person
        match: [nkey]
        fields: [nkey, name]
        participants:
          east: {side}
          west: {side}
    options: {{batch_size: 500, load_batch_size: 50}}
""")
    return spec


def fill(path: Path, side: str) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(DDL)
        db.executemany("INSERT INTO people (nkey, name) VALUES (?, ?)",
                       [(f"{side}-{i}", f"{side} person {i}") for i in range(RECORDS)])


def rows(path: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(path, timeout=30) as db:
        return db.execute("SELECT nkey, name, patchbay_id FROM people").fetchall()


def test_a_killed_initial_load_resumes_without_duplicates(tmp_path: Path) -> None:
    fill(tmp_path / "east.db", "east")
    fill(tmp_path / "west.db", "west")
    spec = write_spec(tmp_path)
    run = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "run", str(spec), "-i", NAME,
                            "--state", str(tmp_path / "state")], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            if RECORDS < len(rows(tmp_path / "west.db")) < 2 * RECORDS - 500:
                os.kill(run.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        assert run.wait(timeout=30) == -signal.SIGKILL, "the load was over before the kill"
    finally:
        if run.poll() is None:
            run.kill()

    report = run_integration(spec, NAME, state=tmp_path / "state")
    assert not report["dead"], report
    east, west = rows(tmp_path / "east.db"), rows(tmp_path / "west.db")
    for held in (east, west):
        assert len(held) == 2 * RECORDS
        assert len({nkey for nkey, _, _ in held}) == 2 * RECORDS, "a record twice"
        assert all(gid for _, _, gid in held), "a record without its gid"
    assert sorted(east) == sorted(west)
    # The resumed load wrote only what the killed one had not recorded.
    written = report["participants"]["west"].get("written", 0)
    assert 0 < written < 2 * RECORDS, report
    again = run_integration(spec, NAME, state=tmp_path / "state")
    assert again["delivered"] == 0 and not again["participants"].get("west", {}).get("written"), \
        again
