"""`make demo` installs what the demo needs and no test tools; `make test` installs them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def planned(target: str, venv: Path) -> list[str]:
    """The commands `make` would run for `target` (a dry run of the real Makefile)."""
    done = subprocess.run(["make", "-n", "-C", str(ROOT), target, f"VENV={venv}"],
                          capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if "pip install" in line]


def test_demo_installs_patchbay_without_the_test_tools(tmp_path: Path) -> None:
    assert planned("demo", tmp_path / "venv") == [
        f"{tmp_path}/venv/bin/pip install --quiet --upgrade pip",
        f"{tmp_path}/venv/bin/pip install --quiet -e '.[aggregation,xlsx,sqlite,salesforce]'",
    ]


def test_test_installs_the_test_tools(tmp_path: Path) -> None:
    assert planned("test", tmp_path / "venv") == [
        f"{tmp_path}/venv/bin/pip install --quiet --upgrade pip",
        f"{tmp_path}/venv/bin/pip install --quiet -e '.[dev]'",
    ]


def test_after_the_demo_test_adds_the_test_tools_and_after_test_the_demo_installs_nothing(
        tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    later = (ROOT / "pyproject.toml").stat().st_mtime + 10
    (venv / ".installed").touch()
    os.utime(venv / ".installed", (later, later))
    assert planned("test", venv) == [f"{venv}/bin/pip install --quiet -e '.[dev]'"]
    (venv / ".installed-dev").touch()
    os.utime(venv / ".installed-dev", (later, later))
    assert planned("demo", venv) == []


def test_check_lints_types_and_runs_the_unit_tests_not_marked_slow(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = subprocess.run(["make", "-n", "-C", str(ROOT), "check", f"VENV={venv}"],
                          capture_output=True, text=True, check=True)
    commands = [line for line in done.stdout.splitlines() if line.startswith(f"{venv}/bin/")]
    assert commands == [
        f"{venv}/bin/pip install --quiet --upgrade pip",
        f"{venv}/bin/pip install --quiet -e '.[dev]'",
        f"{venv}/bin/ruff check src tests bench",
        f"{venv}/bin/mypy",
        f'{venv}/bin/pytest -q -m "not slow" tests/unit',
    ]
