"""The worker's lease (runtime/lease.py): renewed only by the group's answers without an
error, from when they were asked; the worker's consumer renews it; a worker whose lease
ran out waits for a renewal, or gives its batch up once a rebalance begins.

The batch given up in the agent's loop (nothing written, nothing acked) is in
tests/unit/test_agent_loop.py; a worker stopped past its session on a real cluster in
tests/integration/test_faults.py."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.group import (
    HeartbeatRequest,
    HeartbeatResponse_v1,
    JoinGroupRequest,
    SyncGroupRequest,
    SyncGroupResponse_v1,
)
from aiokafka.protocol.metadata import MetadataRequest

from omnijourney.config import load
from omnijourney.runtime.app import Worker
from omnijourney.runtime.lease import Fenced, Lease, renewing, window
from omnijourney.settings import Settings
from tests.unit.test_engine import REPO

NO_ERROR, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID = 0, 27, 25


def worker(**settings: Any) -> Worker:
    js = load(REPO / "journeys").journey_set
    assert js is not None
    return Worker(Settings(bootstrap="localhost:1", app_id="lease-test", **settings), js)


def heartbeat() -> HeartbeatRequest:
    return HeartbeatRequest("g", 3, "member-1")


def sync() -> SyncGroupRequest:
    return SyncGroupRequest("g", 3, "member-1", None, [])


class Group:
    """A coordinator that takes ``delay`` (on a clock of its own) to answer."""

    def __init__(self, error: int = NO_ERROR, delay: float = 2.0) -> None:
        self.now = 100.0
        self.error, self.delay = error, delay
        self.asked: list[Any] = []

    def clock(self) -> float:
        return self.now

    async def send(self, node_id: int, request: Any, **_: Any) -> Any:
        self.asked.append(request)
        self.now += self.delay
        if isinstance(request, HeartbeatRequest):
            return HeartbeatResponse_v1(0, self.error)
        if isinstance(request, SyncGroupRequest):
            return SyncGroupResponse_v1(0, self.error, b"")
        return "other"


def test_a_lease_lasts_two_thirds_of_the_shorter_group_timeout_and_never_goes_back() -> None:
    assert window(45.0, 300.0) == pytest.approx(30.0)
    assert window(6.0, 3.0) == pytest.approx(2.0)  # the rebalance timeout is shorter
    lease = Lease(4.0)
    assert not lease.held(0.0)  # not a member until the group says so
    lease.renew(10.0)
    assert lease.held(13.9) and not lease.held(14.0)
    lease.renew(5.0)  # an answer to an older request, come late
    assert lease.until == 14.0


def test_a_heartbeat_answered_without_an_error_renews_from_when_it_was_sent() -> None:
    group = Group(delay=2.0)
    lease = Lease(4.0)
    send = renewing(group.send, lease, group.clock)
    assert asyncio.run(send(0, heartbeat())).error_code == NO_ERROR
    # Sent at 100, answered at 102: the group had it at 100 at the earliest, so the
    # lease runs from 100, not from the answer.
    assert lease.until == 104.0
    asyncio.run(send(0, sync()))
    assert lease.until == 106.0


@pytest.mark.parametrize("error", [REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID])
def test_an_answer_with_an_error_does_not_renew(error: int) -> None:
    """Rebalancing: the member must join again before it owns anything; unknown: the
    group put it out (a worker stopped past its session)."""
    group = Group(error=error)
    lease = Lease(4.0)
    send = renewing(group.send, lease, group.clock)
    asyncio.run(send(0, heartbeat()))
    asyncio.run(send(0, sync()))
    assert lease.until == -math.inf


def test_other_requests_pass_through_untouched_and_renew_nothing() -> None:
    group = Group()
    lease = Lease(4.0)
    send = renewing(group.send, lease, group.clock)
    assert asyncio.run(send(0, MetadataRequest([]))) == "other"
    joined = JoinGroupRequest("g", 6000, 300000, "", None, "consumer", [])
    assert asyncio.run(send(0, joined)) == "other"  # joined, assignment not known yet
    assert lease.until == -math.inf
    assert len(group.asked) == 2


def test_the_worker_s_consumer_renews_the_worker_s_lease(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard 7 on the aiokafka consumer Faust builds for the worker (not started): its
    client's answers to heartbeats renew the worker's own lease."""
    group = Group(delay=0.0)
    monkeypatch.setattr(AIOKafkaClient, "send", lambda self, node, request, **kw:
                        group.send(node, request, **kw))
    w = worker(session_timeout=6.0)
    thread: Any = w.app.consumer._thread  # type: ignore[attr-defined]

    async def beat() -> None:
        client = thread._create_worker_consumer(thread.transport)
        try:
            before = time.monotonic()
            await client._client.send(0, heartbeat())
            assert before + 4.0 <= w.lease.until <= time.monotonic() + 4.0
        finally:
            await client.stop()

    assert not w.lease.held(time.monotonic())
    asyncio.run(beat())
    assert w.lease.held(time.monotonic())


def test_a_lapsed_lease_holds_the_write_until_a_heartbeat_renews_it() -> None:
    w = worker()
    w.app.rebalancing = False

    async def go() -> float:
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, w.lease.renew, time.monotonic() + 0.3)
        started = time.monotonic()
        await w.hold_lease()
        return time.monotonic() - started

    assert asyncio.run(go()) >= 0.29
    assert w.metrics.registry.get_sample_value("omnijourney_lease_waits_total",
                                               {"outcome": "renewed"}) == 1


@pytest.mark.parametrize("how", ["rebalancing", "new generation"])
def test_a_lapsed_lease_gives_the_batch_up_once_a_rebalance_begins(how: str) -> None:
    """What a worker stopped past its session sees: no renewal (its heartbeat is
    refused), then the rebalance it joins again by, or one that went by meanwhile."""
    w = worker()
    w.app.rebalancing = False
    w.app.consumer_generation_id = 3

    def rebalance() -> None:
        if how == "rebalancing":
            w.app.rebalancing = True
        else:
            w.app.consumer_generation_id = 4

    async def go() -> None:
        asyncio.get_running_loop().call_later(0.2, rebalance)
        with pytest.raises(Fenced):
            await w.hold_lease()

    asyncio.run(go())
    assert not w.lease.held(time.monotonic())
    assert w.metrics.registry.get_sample_value("omnijourney_lease_waits_total",
                                               {"outcome": "fenced"}) == 1


def test_every_write_of_the_worker_waits_for_the_lease() -> None:
    """``send_all`` (commands, states, claims, dead letters) goes to the producer only
    once the lease holds."""
    w = worker()
    w.app.rebalancing = False
    produced: list[float] = []

    async def produce(outgoing: list[Any]) -> list[Any]:
        produced.append(time.monotonic())
        return []

    w.produce = produce  # type: ignore[method-assign]

    async def go() -> float:
        renewed = time.monotonic() + 0.2
        asyncio.get_running_loop().call_later(0.2, w.lease.renew, renewed)
        await w.send_all([])
        return renewed

    renewed = asyncio.run(go())
    assert len(produced) == 1 and produced[0] >= renewed - 0.01
    asyncio.run(w.send_all([]))  # held: at once
    assert len(produced) == 2
