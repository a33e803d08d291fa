"""Files written whole or not at all: readers never see half a file.

The temporary file is named after the file it replaces, this machine and this process
(`.NAME.HOST.PID.RANDOM.tmp`), so that one left behind by a process killed mid-write is
known for what it is, and removed (`remove_stale`) by the next write of the same file or
when a file system opens its folder.
"""

from __future__ import annotations

import glob
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from patchbay.processes import gone, this_host


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` that replaces it, once on disk, if the block succeeds,
    else vanishes. Beside it, so that the rename stays within one file system."""
    remove_stale(path.parent, path.name)
    handle, name = tempfile.mkstemp(dir=path.parent, suffix=".tmp",
                                    prefix=f".{path.name}.{this_host()}.{os.getpid()}.")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        with temporary.open("rb+") as written:
            os.fsync(written.fileno())
        # mkstemp makes files only their owner can read; keep what the old file allowed.
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def remove_stale(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files in `folder` (of the file `name`, or of any) that processes of
    this machine which have ended left behind; the ones removed. A temporary of a running
    process, or of another machine, is left alone: it may be being written."""
    host = this_host()
    # mkstemp's random part has no dot.
    pattern = re.compile(rf"\.(?:{re.escape(name) if name else '.+'})\.{re.escape(host)}"
                         rf"\.(?P<pid>\d+)\.[^.]+\.tmp")
    removed = []
    for candidate in folder.glob(f".{glob.escape(name) if name else '*'}.*.tmp"):
        found = pattern.fullmatch(candidate.name)
        if found is not None and gone(host, found["pid"]):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed
