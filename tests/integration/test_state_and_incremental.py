"""Engine state on PostgreSQL, and incremental runs by watermark."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import sqlalchemy as sa

from patchbay import run_integration
from patchbay.store import Store


def make_source(path: Path, rows: list[tuple[int, str, str]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, "
                   "updated_at TEXT)")
        db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?)", rows)


def write_spec(directory: Path, watermark: bool) -> Path:
    with sqlite3.connect(directory / "target.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS items (item_id INTEGER PRIMARY KEY, name TEXT)")
    spec = directory / "items.yaml"
    spec.write_text(f"""
systems:
  source: sqlite:///source.db
  target: sqlite:///target.db
integrations:
  - name: items
    pattern: migration
    source: {{system: source, object: items, key: id{", watermark: updated_at" if watermark else ""}}}
    transform: {{fields: {{item_id: id, name: name}}}}
    destination: {{system: target, object: items, key: item_id}}
    options: {{batch_size: 2}}
""")
    return spec


def test_incremental_runs_take_only_what_changed_since_the_last(tmp_path: Path) -> None:
    make_source(tmp_path / "source.db", [(1, "a", "2024-01-01 10:00:00"),
                                         (2, "b", "2024-01-02 10:00:00"),
                                         (3, "c", "2024-01-03 10:00:00")])
    spec = write_spec(tmp_path, watermark=True)
    state = tmp_path / "state"
    first = run_integration(spec, state=state)
    assert (first["counts"]["read"], first["counts"]["created"]) == (3, 3)

    make_source(tmp_path / "source.db", [(2, "b2", "2024-02-01 09:00:00"),
                                         (4, "d", "2024-02-01 09:00:00")])
    second = run_integration(spec, state=state)
    assert second["verdict"] == "complete"
    # the two changed records, and the one that sat on the previous run's high-water mark
    assert second["counts"]["read"] == 3
    assert (second["counts"]["created"], second["counts"]["updated"]) == (1, 1)
    assert second["counts"]["unchanged"] == 1

    again = run_integration(spec, state=state)
    assert again["counts"]["read"] == 2, "only the records at the high-water mark are re-read"
    assert again["counts"]["unchanged"] == 2

    with sqlite3.connect(tmp_path / "target.db") as db:
        assert db.execute("SELECT item_id, name FROM items ORDER BY item_id").fetchall() == [
            (1, "a"), (2, "b2"), (3, "c"), (4, "d")]


def test_engine_state_in_postgresql(tmp_path: Path, pg_url: str) -> None:
    schema = f"pb_state_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        state_url = f"{pg_url}?options=-csearch_path%3D{schema}"
        make_source(tmp_path / "source.db", [(i, f"n{i}", "2024-01-01") for i in range(1, 8)])
        spec = write_spec(tmp_path, watermark=False)
        report = run_integration(spec, state=state_url)
        assert report["verdict"] == "complete" and report["counts"]["created"] == 7

        store = Store.open(state_url)
        [run] = store.runs.latest()
        assert run.id == report["run"] and run.status == "complete"
        assert run.counters["created"] == 7 and run.batches == 4
        assert run.report is not None and run.report["counts"]["read"] == 7
        store.close()
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names(schema=schema))
        assert {"patchbay_runs", "patchbay_outcomes", "patchbay_cursors", "patchbay_meta"} <= tables
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
