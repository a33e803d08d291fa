"""The one error tree of patchbay, named by what the runner does with it.

    PatchbayError
    ├── SpecError            the integration file is wrong; nothing ran (exit 2)
    │   └── ParameterError   a run parameter is missing or of the wrong type
    ├── RetriableError       a transient fault (timeout, limit, 5xx): retry with backoff
    │   ├── ConnectionFailed a system cannot be reached or refused the credentials
    │   └── EngineStateUnavailable   the engine state cannot be reached or is busy
    ├── EngineStateError     the engine state failed an operation (its URL redacted, the operation)
    │   └── EngineStateUnavailable   the same class: retriable, and an engine-state failure
    ├── RecordRejected       one record is set aside with its reason; the run goes on
    ├── FatalRunError        the run cannot go on; it stops resumable at its checkpoint
    ├── RunNotResumable      asked to resume a run that is finished or unknown
    │   └── UnknownRun       no run has this id (bad input, exit 2)
    └── MessageSeen          a pushed message accepted already comes again (a replay)

Each error carries the context it concerns (integration, run, system, object,
record key) so that a message can be read on its own.
"""

from __future__ import annotations

from typing import Any


class PatchbayError(Exception):
    """Base of every error patchbay raises on purpose."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        if not self.context:
            return self.message
        where = ", ".join(f"{k}={v}" for k, v in self.context.items())
        return f"{self.message} ({where})"


class SpecError(PatchbayError):
    """An integration file or model is invalid. `problems` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        self.problems = problems or [message]

    def __str__(self) -> str:
        if len(self.problems) == 1 and self.problems[0] == self.message:
            return self.message
        return self.message + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class ParameterError(SpecError):
    """A run parameter is missing, unknown or cannot be converted to its type."""


class RetriableError(PatchbayError):
    """A transient fault; the same call may succeed later."""


class ConnectionFailed(RetriableError):
    """A system could not be reached, or refused the connection.

    Retriable: during a run, a database that is restarting comes back. Before any work
    (describing the destination), it stops the command with its message at once.
    """


class EngineStateError(PatchbayError):
    """The engine state failed an operation. Its context names the state (`state`, the URL
    with its secrets redacted) and the `operation` (a repository's method, or `commit`); no
    SQLAlchemy exception goes past the store."""


class EngineStateUnavailable(EngineStateError, RetriableError):
    """The engine state cannot be reached, or is busy: a PostgreSQL state restarting or a
    lost connection, an SQLite lock held too long. The work waits and is tried again."""


class RecordRejected(PatchbayError):
    """One record cannot be written; it is set aside with this reason."""


class FatalRunError(PatchbayError):
    """The run cannot continue; it stops at its last checkpoint and stays resumable."""


class RunNotResumable(PatchbayError):
    """The run asked for does not exist or has already finished."""


class UnknownRun(RunNotResumable):
    """No run has the id given: a mistyped id, or another engine state."""


class MessageSeen(PatchbayError):
    """A pushed message (a signed webhook request) was accepted already: it is not
    queued again."""
