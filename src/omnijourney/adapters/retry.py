"""How an adapter retries a provider: bounded attempts, exponential backoff with jitter
(or the provider's ``Retry-After``, capped), an optional rate limiter, never past a
command's deadline. One object, configured once (``ADAPTER_*``), used for single and
batch deliveries alike."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import structlog

from omnijourney.adapters.protocols import Limiter, Outcome, TransientError
from omnijourney.core.redaction import scrub

log = structlog.get_logger("omnijourney.adapter")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 10
    base_delay: float = 0.5  # seconds before the first retry, doubled each time
    max_delay: float = 30.0  # no wait is longer, a provider's Retry-After included
    limiter: Limiter | None = None
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def from_env(cls, env: Mapping[str, str], limiter: Limiter | None = None) -> RetryPolicy:
        return cls(attempts=int(env.get("ADAPTER_MAX_ATTEMPTS", "10")),
                   base_delay=float(env.get("ADAPTER_BACKOFF_BASE", "0.5")),
                   max_delay=float(env.get("ADAPTER_BACKOFF_MAX", "30")), limiter=limiter)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        # A provider's Retry-After is honoured up to our own cap: an hour's would outlast
        # the consumer's poll interval, and the deadline check ends what the cap cannot.
        if retry_after is not None:
            return min(self.max_delay, retry_after)
        return min(self.max_delay, self.base_delay * 2.0 ** attempt) * random.uniform(0.5, 1.0)

    def run(self, attempt_once: Callable[[], T], *, deadline: datetime | None, what: str,
            now: Callable[[], datetime],
            on_retry: Callable[[], object] | None = None) -> T | Outcome:
        """Call ``attempt_once``, retrying transient errors, never past ``deadline``."""
        reason = "no attempt"
        for attempt in range(self.attempts):
            if self.limiter is not None:
                self.limiter.acquire()
            try:
                return attempt_once()
            except TransientError as exc:
                reason = str(exc)
                delay = self.delay(attempt, exc.retry_after)
                if attempt + 1 == self.attempts:
                    break
                if deadline is not None and now() + timedelta(seconds=delay) > deadline:
                    return Outcome("expired", reason=f"deadline passed while retrying: {reason}")
                log.warning("retry", what=what, attempt=attempt + 1, delay=round(delay, 2),
                            reason=scrub(reason))
                if on_retry is not None:
                    on_retry()
                self.sleep(delay)
        return Outcome("failed", reason=f"gave up after {self.attempts} attempts: {reason}")
