"""The lease: a worker writes only while it knows it is still a member of its group.

A worker stopped past its session timeout (SIGSTOP, a VM frozen, a swap storm) is put out
of its group and its partitions go to another worker, which restores their states and
goes on. When the stopped one runs again it does not know yet: it learns it at its next
heartbeat, a few seconds later. Until then it went on handling what it had fetched and
wrote states to the changelog behind the new owner's. The fault test that stops a worker
for 15 s found what that does (session 15, one run in four): the new owner read those
stale states back at the next rebalance and sent an email the journey had already sent,
under another id. Kafka fences such a "zombie" only with transactions, and the engine
runs at least once (the brief rules out Faust's exactly-once mode). So the worker fences
itself.

The group coordinator puts a member out only when no heartbeat of it has come for
``session.timeout`` (or, in a rebalance, when it has not joined within the rebalance
timeout, ``max.poll.interval``). So a member whose heartbeat, sent at ``t``, was answered
without an error was in the group at least until ``t`` plus that timeout, whatever came
later. The lease runs from the *sending* of the last heartbeat answered so (or of the
last SyncGroup answered so, which is how a member learns its assignment) for two thirds
of the shorter timeout; the last third is the margin for a record sent just before the
lease ends to reach its broker. A heartbeat answered "rebalancing" does not renew it.

``Worker.send_all`` holds every write to the lease: commands, states, identity claims,
dead letters. A worker whose lease has run out waits until a heartbeat renews it; if a
rebalance begins meanwhile (a zombie's next heartbeat is refused, it rejoins) the batch
is given up (``Fenced``): nothing of it was written or acked, so it is read again from
the committed offsets by whoever owns its partition after the rebalance.

What the lease cannot stop: records handed to the producer before the stop and still in
its buffer go out after it. The changelog's fence (``runtime/restore.py``) keeps a
restore from taking those.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

# Kafka's API keys of the requests whose answer without an error renews the lease.
HEARTBEAT, SYNC_GROUP = 12, 14
RENEWING = frozenset({HEARTBEAT, SYNC_GROUP})

# The share of the shorter group timeout a lease lasts from its renewal's sending.
SHARE = 2 / 3


class Fenced(Exception):
    """The worker's lease ran out and a rebalance began: it may no longer own the
    partitions of the batch at hand, so the batch is not written (nor acked)."""


class Lease:
    """Until when (``time.monotonic``) this worker knows it is a member of its group."""

    __slots__ = ("until", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self.until = -math.inf

    def renew(self, sent_at: float) -> None:
        """A renewing request sent at ``sent_at`` was answered without an error."""
        until = sent_at + self.window
        self.until = max(self.until, until)

    def held(self, now: float) -> bool:
        return now < self.until


def window(session_timeout: float, max_poll_interval: float) -> float:
    """How long a lease lasts from its renewal's sending, in seconds."""
    return SHARE * min(session_timeout, max_poll_interval)


Send = Callable[..., Awaitable[Any]]


def renewing(send: Send, lease: Lease, clock: Callable[[], float] = time.monotonic) -> Send:
    """``send`` (aiokafka's ``AIOKafkaClient.send``: node, request, ...) that renews
    ``lease`` with each heartbeat or SyncGroup answered without an error."""

    async def send_and_renew(node_id: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(request, "API_KEY", None) not in RENEWING:
            return await send(node_id, request, *args, **kwargs)
        sent_at = clock()
        response = await send(node_id, request, *args, **kwargs)
        if getattr(response, "error_code", None) == 0:
            lease.renew(sent_at)
        return response

    return send_and_renew
