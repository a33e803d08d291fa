"""The one retry policy: which errors are tried again, how often, and how far apart.

A base module (it imports only the error tree), so that connectors, elements and the
runtime all retry the same way: the destination-write step (elements/sink.py) retries a
write in process, the outbox's deliverer (runtime/delivery.py) schedules a delivery's
next attempt with `next_delay`, and the Salesforce connector retries a call the org
answered with REQUEST_LIMIT_EXCEEDED or a 5xx.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from patchbay.errors import RetriableError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, up to a number of attempts in all."""

    max_attempts: int = 8
    """Attempts in all, the first included; the last failed one is final."""
    backoff_seconds: float = 1.0
    """The delay after the first failed attempt; it doubles with each one after."""
    backoff_max: float = 300.0
    jitter: float = 0.2
    """Up to this fraction of the delay is taken off at random, so that work that failed
    together does not all come back together."""
    retry_on: tuple[type[BaseException], ...] = (RetriableError,)
    """The errors worth another attempt; any other is raised at once."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_seconds < 0 or self.backoff_max < 0:
            raise ValueError("backoff delays cannot be negative")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction, at least 0 and below 1")

    def next_delay(self, attempts: int) -> float:
        """Seconds to wait after `attempts` failed attempts (1 for the first failure):
        backoff_seconds * 2**(attempts-1), capped at backoff_max, less the jitter."""
        exponent = max(attempts - 1, 0)
        base = self.backoff_max if exponent >= 64 else min(self.backoff_seconds * 2.0 ** exponent,
                                                           self.backoff_max)
        return base * (1.0 - self.jitter * random.random())

    def gives_up(self, attempts: int) -> bool:
        """Whether work that has failed `attempts` times is not tried again."""
        return attempts >= self.max_attempts

    def call(self, action: Callable[[], T]) -> T:
        """`action`'s result, tried again after the policy's delay while it raises an error
        of `retry_on`; the last such error is raised when the policy gives up."""
        attempts = 0
        while True:
            try:
                return action()
            except self.retry_on:
                attempts += 1
                if self.gives_up(attempts):
                    raise
                time.sleep(self.next_delay(attempts))
