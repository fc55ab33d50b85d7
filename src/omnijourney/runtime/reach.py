"""Calls to the cluster at start-up, again while it cannot answer.

A worker, adapter or tool that starts while one broker of the bootstrap list is down (or a
partition's leader is moving) should start, not crash into its supervisor's restart loop:
kafka-python's admin calls and metadata fetches fail at once when the node they picked is
away, where a moment later another node answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog

from omnijourney.kafkaclients import KafkaError, TopicAlreadyExistsError

log = structlog.get_logger("omnijourney.kafka")
T = TypeVar("T")


def until_reachable(call: Callable[[], T], *, what: str, timeout: float = 60.0,
                    pause: float = 1.0) -> T:
    """``call()``, repeated while it fails for want of a broker, for up to ``timeout``
    seconds; then its last error. Errors that are answers (a topic that exists) pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except TopicAlreadyExistsError:
            raise
        except (KafkaError, OSError) as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("kafka_unreachable_retry", what=what, reason=str(exc)[:200])
        time.sleep(pause)
