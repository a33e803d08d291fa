"""The one error tree of patchbay, named by what the runner does with it.

    PatchbayError
    ├── SpecError              the integration file is wrong; nothing ran (exit 2)
    │   ├── ParameterError     a run parameter is missing or of the wrong type
    │   └── MissingDriver      a system's driver is not installed: the extra to install
    ├── RetriableError         a transient fault (timeout, limit, 5xx): retry with backoff
    │   ├── ConnectionFailed   a system cannot be reached or refused the credentials
    │   │   └── StreamingError Salesforce's streaming (CometD) connection failed
    │   │       └── SessionExpired  the session was refused: renew it, then retry
    │   └── EngineStateUnavailable  the engine state cannot be reached or is busy
    ├── EngineStateError       the engine state failed an operation (its URL redacted, the operation)
    │   └── EngineStateUnavailable  the same class: retriable, and an engine-state failure
    ├── RecordRejected         one record is set aside with its reason; the run goes on
    ├── FatalRunError          the run cannot go on; it stops resumable at its checkpoint
    ├── LeaseLost              a worker no longer holds what it leased (a key range): it stops
    ├── RunNotResumable        asked to resume a run that is finished or unknown
    │   └── UnknownRun         no run has this id (bad input, exit 2)
    ├── MessageSeen            a pushed message accepted already comes again (a replay)
    ├── LeaseLost              another process took over a lease: drop the work, stop it
    ├── ChoiceRefused          a person's choice (a conflict, a correlation's pair) is refused (bad input)
    │   ├── UnknownConflict    no conflict has this id
    │   ├── ConflictNotHeld    the conflict waits for no one (settled, chosen or resolved)
    │   └── UnknownPair        a correlation has no pair of these two keys
    ├── SalesforceError        an error answer of a Salesforce org (status, error code)
    ├── ReplayIdInvalid        a CDC replay id the org no longer keeps: poll instead
    ├── CoercionError          a value cannot become a field's type (also a ValueError)
    └── ApiError               an HTTP API answer other than success (status, problems)

Each error carries the context it concerns (integration, run, system, object,
record key) as keyword arguments, in `context`, so that a message can be read on its own:
what the message does not name already is shown after it.
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
        # Messages usually name their system ("system 'crm' ..."): not said twice.
        unsaid = {k: v for k, v in self.context.items() if f"'{v}'" not in self.message
                  and f" {v}:" not in self.message}
        if not unsaid:
            return self.message
        where = ", ".join(f"{k}={v}" for k, v in unsaid.items())
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


class MissingDriver(SpecError):
    """A system (or an aggregation's merge, an XLSX report) needs a driver package that is
    not installed; the message names the extra that brings it (`patchbay[rabbitmq]`)."""


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


class LeaseLost(PatchbayError):
    """Work held under a lease (noticing an integration's changes, a key range of a
    partitioned run) was taken over by another process, or the run ended: what this one was
    about to commit or checkpoint is dropped (its fencing token is stale), and it stops doing
    that work."""


class RunNotResumable(PatchbayError):
    """The run asked for does not exist or has already finished."""


class UnknownRun(RunNotResumable):
    """No run has the id given: a mistyped id, or another engine state."""


class MessageSeen(PatchbayError):
    """A pushed message (a signed webhook request) was accepted already: it is not
    queued again."""


class ChoiceRefused(PatchbayError):
    """A person's choice for a sync's conflict cannot be taken (a participant that is not
    among its candidates, a conflict of a kind that takes no value)."""


class UnknownConflict(ChoiceRefused):
    """No conflict has the id given: a mistyped id, or another engine state."""


class ConflictNotHeld(ChoiceRefused):
    """The conflict is not held for a person: its policy settled it, or a choice was made
    already."""


class UnknownPair(ChoiceRefused):
    """A correlation has no pair of the two keys given (the matcher never put them side by
    side), or the engine state holds no pairs of that correlation at all."""


class SalesforceError(PatchbayError):
    """An error answer of a Salesforce org that the connector does not turn into an
    outcome: its HTTP status, error code (INVALID_FIELD, ...) and message."""

    def __init__(self, status: int, code: str, message: str, **context: Any) -> None:
        super().__init__(f"{code}: {message}", **context)
        self.status, self.code = status, code


class StreamingError(ConnectionFailed):
    """Salesforce's streaming server (CometD) could not be reached or refused a request."""


class SessionExpired(StreamingError):
    """The streaming server refused the session token: renew it and call again (the next
    call handshakes again by itself)."""


class ReplayIdInvalid(PatchbayError):
    """A subscription's replay id is outside the org's retention; the change stream falls
    back to polling for what it missed."""

    def __init__(self, channel: str, replay_id: int, message: str) -> None:
        super().__init__(message)
        self.channel, self.replay_id = channel, replay_id


class CoercionError(PatchbayError, ValueError):
    """A value cannot become the type asked for. A ValueError too: converters are called
    where a failing conversion of any kind means the same."""


class ApiError(PatchbayError):
    """An answer of the HTTP API other than success: its status, message and, for bad
    input, problems; `extra` are further fields of the JSON body."""

    def __init__(self, status: int, message: str, problems: list[str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.problems, self.extra = status, problems, extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.problems is not None:
            body["problems"] = self.problems
        body.update(self.extra)
        return body
