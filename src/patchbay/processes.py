"""Whether the process that left something behind (a run, a lease, a temporary file) is gone.

Only a process of this machine can be known to be gone: one of another machine is never
taken for dead here (runs wait for its heartbeat to go stale, leases for their expiry).
"""

from __future__ import annotations

import os
import socket


def this_host() -> str:
    return socket.gethostname()


def this_process() -> str:
    """`host:pid`: the owner of what this process holds (a run, a key range)."""
    return f"{this_host()}:{os.getpid()}"


def gone(host: str, pid: str | int) -> bool:
    """Whether process `pid` of `host` is known to have ended: `host` is this machine and no
    process has that id. A pid that is not a number is not known to be gone."""
    if host != this_host():
        return False
    try:
        os.kill(int(pid), 0)
    except ValueError:
        return False
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: it runs
        return False
    return False


def owner_gone(owner: str) -> bool:
    """Whether the process of an owner named `host:pid:...` (a delivering worker, a member of
    the cluster) is known to have ended."""
    host, pid, *_ = [*owner.split(":"), "", ""]
    return gone(host, pid)
