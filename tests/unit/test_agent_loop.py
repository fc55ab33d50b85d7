"""The worker's agent loop without a broker: every send in order (a batch's commands, then
its states), each batch on the states of the one before it, no record released before its
batch is written, a batch handled record by record after a fault past the Engine.

The real Worker runs here with its Faust app never started: the stream is a list of
batches, the producer an in-memory log whose acks take a while, the table a dict."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import pytest
from faust.types import TP

from omnijourney.codecs import decode_command, decode_state, encode_event, encode_state
from omnijourney.config import load
from omnijourney.core import Event
from omnijourney.runtime.app import Worker
from omnijourney.runtime.engine import Outgoing
from omnijourney.runtime.restore import FENCE_HEADER, fence
from omnijourney.runtime.states import StateStore
from omnijourney.settings import Settings
from tests.helpers import ev, signup, t

REPO = Path(__file__).resolve().parents[2]
JS = load(REPO / "journeys").journey_set
assert JS is not None


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    refs: int = 0
    log: list[str] = field(default_factory=list)

    def incref(self) -> None:
        self.refs += 1

    def ack(self, consumer: object) -> bool:
        """As Faust's: one reference less; the last one marks the record done (its offset
        may then be committed). A reference dropped any other way never does."""
        self.refs -= 1
        if self.refs == 0:
            self.log.append(f"released {self.offset}")
            return True
        return False

    def decref(self) -> int:
        self.refs -= 1
        return self.refs


@dataclass
class StreamEvent:
    message: Message


class Batches:
    """Fixed batches, handed out as ``runtime.batching.take_batches`` hands them out: each
    batch is acked (one reference dropped) once the handler asks for the next one, and a
    batch the handler never finished is not acked (tests/unit/test_batching.py checks
    that contract on Faust's own streams)."""

    def __init__(self, batches: list[list[StreamEvent]]) -> None:
        self.batches = batches

    async def take(self, size: int, within: float) -> AsyncIterator[list[StreamEvent]]:
        for batch in self.batches:
            await asyncio.sleep(0.01)  # records arriving (the loop runs other tasks)
            for e in batch:
                e.message.incref()
            yield batch
            for e in batch:
                e.message.ack(None)


class Rig:
    def __init__(self, tmp_path: Path, ack_delay: float = 0.02) -> None:
        self.worker = Worker(Settings(bootstrap="127.0.0.1:1", datadir=str(tmp_path)), JS)
        self.table: dict[bytes, bytes] = {}
        self.worker.states = StateStore(lambda: self.table)
        self.log: list[str] = []  # sends, releases, in the order they happened
        self.sent: list[Outgoing] = []
        self.ack_delay = ack_delay
        self.fail_for: str | None = None
        self.failures = 0  # how many of fail_for's state writes fail
        # Past the lease (the worker's own gate in front of every write): a member of
        # its group for good, unless a test lets the lease run out.
        self.worker.produce = self.send_all  # type: ignore[method-assign, assignment]
        self.worker.lease.renew(math.inf)
        self.worker.take = lambda stream, size, within: stream.take(size, within)
        self.offset = 0

    async def send_all(self, outgoing: list[Outgoing]) -> None:
        """Logs one line a send: ``commands a,b`` (commands and other records, by
        customer), ``states a,b`` (the changelog), or both joined by `` + ``."""
        if not outgoing:
            return
        changelog = self.worker.changelog
        parts = {}
        for what, group in (("commands", [o for o in outgoing if o.topic != changelog]),
                            ("states", [o for o in outgoing if o.topic == changelog])):
            if group:
                parts[what] = sorted({o.key.decode() for o in group
                                      if o.key and not o.key.startswith(b"\0")})
        if self.fail_for in parts.get("states", ()) and self.failures > 0:
            self.failures -= 1
            raise ValueError("planted: a bug no record should be able to trigger")
        self.log.append(" + ".join(f"{what} {','.join(keys)}" for what, keys in parts.items()))
        await asyncio.sleep(self.ack_delay)  # the broker's round trip
        self.sent.extend(outgoing)

    def batch(self, *events: Event) -> list[StreamEvent]:
        out = []
        for e in events:
            self.offset += 1
            out.append(StreamEvent(Message(self.worker.settings.topics.touchpoints, 0,
                                           self.offset, e.customer_id.encode(),
                                           encode_event(e), log=self.log)))
        return out

    def run(self, *batches: list[StreamEvent]) -> None:
        asyncio.run(self.worker.run_stream(Batches(list(batches))))  # type: ignore[arg-type]

    def commands(self, channel: str) -> list[str]:
        return [decode_command(o.value).customer_id for o in self.sent
                if o.topic == self.worker.settings.topics.command(channel) and o.value]


def test_batches_are_written_in_order_each_on_the_states_of_the_one_before(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first = signup(customer="ana", at="2026-03-02T10:00:00Z")
    rig.run(rig.batch(first, signup(customer="bo", at="2026-03-02T10:00:01Z")),
            # ana's sign-up again (a redelivery) and her cart: the sign-up is a duplicate
            # of what the batch before stored, so no second SMS.
            rig.batch(first, ev("cart.item_added", "2026-03-02T10:05:00Z", "ana",
                                cart_id="k1")),
            rig.batch(ev("product.viewed", "2026-03-02T10:06:00Z", "bo", product_id="p1")))
    assert sorted(rig.commands("sms")) == ["ana", "bo"]
    sends = [x for x in rig.log if not x.startswith("released")]
    assert sends == ["commands ana,bo", "states ana,bo", "states ana", "states bo"]
    # Each batch's records are released only after its states were sent, and in order.
    assert rig.log.index("released 2") > rig.log.index("states ana,bo")
    assert rig.log.index("released 4") > rig.log.index("states ana")
    assert [x for x in rig.log if x.startswith("released")] == [
        f"released {i}" for i in range(1, 6)]
    _, ana = decode_state(rig.table[b"ana"])
    assert "ev-" in next(iter(ana.seen)) and len(ana.seen) == 2
    assert any(i.journey == "cart_abandonment" for i in ana.instances.values())


def test_a_batch_handled_record_by_record_leaves_the_next_one_what_was_stored(
        tmp_path: Path) -> None:
    """A batch fails on one customer's state (a bug past the Engine's guards): it is
    handled record by record and that record dead-lettered; the next batch starts from
    what was stored, not from the dead-lettered record's effects."""
    rig = Rig(tmp_path)
    rig.fail_for, rig.failures = "crash", 2  # the batch's write, then the record's alone
    rig.run(rig.batch(signup(customer="crash", at="2026-03-02T10:00:00Z"),
                      signup(customer="ana", at="2026-03-02T10:00:01Z")),
            rig.batch(ev("customer.updated", "2026-03-02T10:01:00Z", "crash",
                         first_name="Cy")))
    (dead,) = [o for o in rig.sent if o.topic == rig.worker.settings.topics.dlq]
    assert dead.key == b"crash"  # its sign-up: the state it made was never stored
    _, crash = decode_state(rig.table[b"crash"])
    # Evaluated on what was stored (nothing), not on the sign-up that was dead-lettered.
    assert crash.profile.get("first_name") == "Cy" and "email" not in crash.profile
    assert b"ana" in rig.table
    assert [x for x in rig.log if x.startswith("released")] == [
        "released 1", "released 2", "released 3"]


def test_records_of_a_write_that_never_finished_stay_unreleased(tmp_path: Path) -> None:
    rig = Rig(tmp_path, ack_delay=30.0)  # acks that do not come before the stop
    batch = rig.batch(signup(customer="ana"))

    async def stop_midway() -> None:
        task = asyncio.ensure_future(rig.worker.run_stream(Batches([batch])))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stop_midway())
    assert batch[0].message.refs == 1  # held: never acked, so never committed
    assert not [x for x in rig.log if x.startswith("released")]
    assert b"ana" not in rig.table


# ------------------------------------------------------------------- the lease

def _out_of_the_group(rig: Rig, after: float) -> None:
    """The worker's lease has run out (stopped past its session); ``after`` seconds into
    the loop, its refused heartbeat makes it join again: a rebalance begins."""
    worker = rig.worker
    worker.lease.until = -math.inf
    worker.app.rebalancing = False

    def rebalance() -> None:
        rig.log.append("rebalance")
        worker.app.rebalancing = True

    asyncio.get_running_loop().call_later(after, rebalance)


def test_a_worker_out_of_its_group_writes_nothing_and_gives_its_batch_up_unacked(
        tmp_path: Path) -> None:
    """Nothing of the batch is sent (no command, no state) and none of its records is
    released, so none is committed: after the rebalance whoever owns the partition reads
    them again. The loop itself goes on (the agent does not fail)."""
    rig = Rig(tmp_path)
    batch = rig.batch(signup(customer="ana", at="2026-03-02T10:00:00Z"))
    held = batch[0].message  # the worker empties a batch it gives up (batching.py)

    async def fenced() -> None:
        _out_of_the_group(rig, after=0.2)
        await rig.worker.run_stream(Batches([batch]))  # type: ignore[arg-type]

    asyncio.run(fenced())
    assert rig.log == ["rebalance"] and not rig.sent
    assert held.refs == 1 and not batch  # held, never acked
    assert b"ana" not in rig.table and "ana" not in rig.worker.states.cache
    assert rig.worker.metrics.registry.get_sample_value(
        "omnijourney_lease_waits_total", {"outcome": "fenced"}) == 1
    # The rebalance over, a member again: the same records, read again, are handled.
    rig.worker.app.rebalancing = False
    rig.worker.lease.renew(math.inf)
    again = rig.batch(signup(customer="ana", at="2026-03-02T10:00:00Z"))
    rig.run(again)
    assert rig.log[1:] == ["commands ana", "states ana", f"released {again[0].message.offset}"]
    assert rig.commands("sms") == ["ana"]


def test_in_process_ticks_of_a_worker_out_of_its_group_write_nothing(
        tmp_path: Path) -> None:
    """The timer's turn gives up too: nothing written, and the due index is to be built
    again (from the table, once the rebalance is over), so the customers it had handed
    out are not left pending for good."""
    rig = _waiting_rig(tmp_path)
    worker = rig.worker
    worker.caught_up = lambda partition: True  # type: ignore[method-assign]

    async def fenced() -> bool:
        _out_of_the_group(rig, after=0.2)
        return await worker.tick_turn()

    assert asyncio.run(fenced()) is False
    assert rig.log == ["rebalance"] and not rig.sent
    assert worker.indexed is None  # rebuilt at the next timer pass after the rebalance
    for cid in ("ana", "bo"):
        _, st = decode_state(rig.table[cid.encode()])
        assert st.next_due() is not None  # still waiting: the tick never counted


def test_the_worker_s_state_records_carry_the_fence_of_its_ownership(tmp_path: Path) -> None:
    """Each changelog record (states, the event clock) carries the fence of the
    partition it goes to (runtime/restore.py); commands carry none."""
    rig = Rig(tmp_path)
    store = rig.worker.table.data
    own = ((FENCE_HEADER, fence(3, 2)),)
    store.fences = {0: own}
    rig.run(rig.batch(signup(customer="ana", at="2026-03-02T10:00:00Z")))
    changelog = [o for o in rig.sent if o.topic == rig.worker.changelog]
    assert changelog and all(o.headers == own for o in changelog)
    assert all(FENCE_HEADER not in dict(o.headers) for o in rig.sent
               if o.topic != rig.worker.changelog)


def test_states_a_zombie_wrote_over_are_written_again_with_the_owner_s_fence(
        tmp_path: Path) -> None:
    """The restore skipped a fenced-out writer's records of ``ana`` (held here) and ``zed``
    (not held: the zombie's alone); compaction would keep those records, so the owner
    writes its own again: ana's state, and a tombstone for zed. Once."""
    rig = Rig(tmp_path)
    rig.run(rig.batch(signup(customer="ana", at="2026-03-02T10:00:00Z")))
    rig.sent.clear()
    worker = rig.worker
    store = worker.table.data
    own = ((FENCE_HEADER, fence(9, 4)),)
    store.fences = {0: own}
    store.data[b"ana"] = rig.table[b"ana"]
    store.overwritten = {TP(worker.changelog, 0): {b"ana", b"zed"}}
    asyncio.run(worker.reassert())
    assert [(o.key, o.value, o.partition, o.headers) for o in rig.sent] == [
        (b"ana", rig.table[b"ana"], 0, own), (b"zed", None, 0, own)]
    assert not store.overwritten
    asyncio.run(worker.reassert())
    assert len(rig.sent) == 2


def test_identity_claims_a_zombie_wrote_over_are_written_again_with_the_owner_s_fence(
        tmp_path: Path) -> None:
    """The same for the identity table: the claim held here (email key -> ana) is
    written again, a key only the zombie claimed gets a tombstone; on the resolver's
    turn, after its batch in flight."""
    rig = Rig(tmp_path)
    worker = rig.worker
    store = worker.identity.data
    own = ((FENCE_HEADER, fence(5, 3)),)
    store.fences = {2: own}
    store.data[b"email:a@example.com"] = b"ana"
    store.overwritten = {TP(worker.identity_changelog, 2): {b"email:a@example.com",
                                                            b"phone:+1555"}}

    async def resolver_batch_then_reassert_then_a_revoke() -> int:
        async with worker.identity_turn:  # a batch of the resolver in flight
            task = asyncio.ensure_future(worker.reassert())
            await asyncio.sleep(0.05)
            assert not rig.sent  # waits for the batch
        await task
        # A rebalance's revoke waits for a rewrite in flight: its claims are on the
        # changelog before another worker may take the partition.
        store.overwritten = {TP(worker.identity_changelog, 2): {b"email:b@example.com"}}
        rewrite = asyncio.ensure_future(worker.reassert())
        await asyncio.sleep(0.005)  # its send in flight (the broker's round trip)
        await worker.on_revoked(None, signal=None)
        sent_by_then = len(rig.sent)
        await rewrite
        return sent_by_then

    assert asyncio.run(resolver_batch_then_reassert_then_a_revoke()) == 3
    del rig.sent[2:]
    assert [(o.topic, o.key, o.value, o.partition, o.headers) for o in rig.sent] == [
        (worker.identity_changelog, b"email:a@example.com", b"ana", 2, own),
        (worker.identity_changelog, b"phone:+1555", None, 2, own)]
    assert not store.overwritten


# ------------------------------------------------------------- in-process ticks

def _waiting_rig(tmp_path: Path, ack_delay: float = 0.02) -> Rig:
    """ana and bo each left a cart (cart_abandonment waits), stored by the agent; the
    worker owns partition 0 and its due index is current. The clock is the wall's, so
    their waits (March 2026) are due."""
    rig = Rig(tmp_path, ack_delay)
    rig.run(rig.batch(signup(customer="ana", at="2026-03-02T10:00:00Z"),
                      signup(customer="bo", at="2026-03-02T10:00:01Z"),
                      ev("cart.item_added", "2026-03-02T10:05:00Z", "ana", cart_id="k1"),
                      ev("cart.item_added", "2026-03-02T10:05:00Z", "bo", cart_id="k2")))
    rig.log.clear()
    rig.sent.clear()
    worker = rig.worker
    worker.owned = lambda: frozenset({0})  # type: ignore[method-assign]
    worker.indexed = frozenset({0})
    assert sorted(worker.index.entries) == ["ana", "bo"]
    return rig


def test_a_caught_up_partitions_due_customers_are_ticked_in_process(tmp_path: Path) -> None:
    rig = _waiting_rig(tmp_path)
    worker = rig.worker
    worker.caught_up = lambda partition: True  # type: ignore[method-assign]
    asyncio.run(worker.hand_ticks())
    # Everything due by now (December, by the wall) fired in one tick each: the cart's
    # wait of an hour, its reminder, its wait for a click (none came; the retargeting
    # after it needs an ads consent they never gave), and the welcome's follow-up. The
    # new states were stored after the commands were acked, as the agent stores a batch.
    sent = sorted((c.customer_id, c.journey, c.step) for c in map(
        decode_command, (o.value for o in rig.sent if o.topic.startswith("commands")))
        if c is not None)
    assert sent == [(cid, journey, step) for cid in ("ana", "bo") for journey, step in (
        ("cart_abandonment", "cart_reminder"), ("welcome", "welcome_followup"))]
    assert rig.log == ["commands ana,bo", "states ana,bo"]
    assert not [o for o in rig.sent if o.topic == worker.settings.topics.ticks]
    assert not worker.index.pending and not worker.index.entries  # nobody waits now
    assert worker.metrics.registry.get_sample_value(
        "omnijourney_ticks_total", {"way": "in_process"}) == 2
    for cid in ("ana", "bo"):
        _, st = decode_state(rig.table[cid.encode()])
        assert not [i for i in st.instances.values() if i.journey == "cart_abandonment"]
        assert st.next_due() is None
    # Nothing is due any more: a second pass hands out nothing.
    asyncio.run(worker.hand_ticks())
    assert rig.log == ["commands ana,bo", "states ana,bo"]


def _herd_rig(tmp_path: Path, customers: list[str], batch_size: int = 1) -> Rig:
    """``customers`` each left a cart (waits due by the wall clock), ticked in process in
    batches of ``batch_size``."""
    rig = Rig(tmp_path)
    # Ids of the customer's own: the same events for a customer wherever it is ticked.
    rig.run(rig.batch(*[e for cid in customers for e in (
        replace(signup(customer=cid, at="2026-03-02T10:00:00Z"), event_id=f"s-{cid}"),
        ev("cart.item_added", "2026-03-02T10:05:00Z", cid, f"c-{cid}", cart_id=f"k-{cid}"))]))
    rig.log.clear()
    rig.sent.clear()
    worker = rig.worker
    worker.settings = replace(worker.settings, batch_size=batch_size)
    worker.owned = lambda: frozenset({0})  # type: ignore[method-assign]
    worker.indexed = frozenset({0})
    worker.caught_up = lambda partition: True  # type: ignore[method-assign]
    assert sorted(worker.index.entries) == sorted(customers)
    return rig


def _ticked_alone(tmp_path: Path, cid: str) -> tuple[list[tuple[str, str, str]], bytes]:
    """The commands (id, journey, step) and the stored state of ``cid``, ticked alone."""
    rig = _herd_rig(tmp_path, [cid])
    asyncio.run(rig.worker.hand_ticks())
    return _commands_of(rig, cid), rig.table[cid.encode()]


def _commands_of(rig: Rig, cid: str) -> list[tuple[str, str, str]]:
    cmds = [decode_command(o.value) for o in rig.sent
            if o.topic.startswith("commands") and o.value and o.key == cid.encode()]
    return sorted((c.command_id, c.journey, c.step) for c in cmds)


def test_a_turns_batches_take_one_round_trip_each_their_states_going_with_the_next_commands(
        tmp_path: Path) -> None:
    """Five due customers in batches of one: a turn of four batches, then one of one.
    Each batch's states go out with the next batch's commands, once its own commands
    were acked, and the turn's last states alone: five round trips for four batches
    instead of eight. Each customer ends as if ticked alone."""
    customers = ["ana", "bo", "cy", "dee", "eve"]
    rig = _herd_rig(tmp_path / "herd", customers)
    worker = rig.worker
    asyncio.run(worker.hand_ticks())
    assert rig.log == ["commands ana", "commands bo + states ana", "commands cy + states bo",
                       "commands dee + states cy", "states dee",
                       "commands eve", "states eve"]
    assert not worker.index.pending and not worker.index.entries
    assert worker.metrics.registry.get_sample_value(
        "omnijourney_ticks_total", {"way": "in_process"}) == 5
    for i, cid in enumerate(customers):
        commands, state = _ticked_alone(tmp_path / f"alone-{i}", cid)
        assert len(commands) == 2 and _commands_of(rig, cid) == commands
        assert rig.table[cid.encode()] == state
        assert cid in worker.states.cache  # served from the cache once written


def _ahead_rig(tmp_path: Path, customers: list[str], ahead: float, now: list[datetime],
               batch_size: int = 1) -> Rig:
    """``_herd_rig`` with states warmed ``ahead`` seconds before they are due, the
    worker's (and its engine's) wall clock at ``now[0]``, and the cache empty, as after
    a restore: the table's bytes only."""
    rig = _herd_rig(tmp_path, customers, batch_size)
    worker = rig.worker
    worker.settings = replace(worker.settings, warm_ahead=ahead)
    worker.clock._wall = lambda: now[0]
    worker.states.cache.clear()
    return rig


def test_states_due_soon_are_decoded_ahead_and_their_ticks_send_what_cold_ticks_send(
        tmp_path: Path) -> None:
    """Half an hour before their reminders, the worker decodes the three waiting
    customers' states into its cache (``Worker.warm``), writing nothing. bo then orders:
    his new state replaces the one warmed. At the due time, the ticks send and store
    exactly what a worker that warmed nothing sends and stores."""
    customers = ["ana", "bo", "cy"]
    outcome = {}
    for warm in (False, True):
        now = [t("2026-03-02T10:30:00Z")]  # the carts' waits end at 11:05
        rig = _ahead_rig(tmp_path / f"warm-{warm}", customers, 3600.0, now, batch_size=2)
        worker = rig.worker
        if warm:
            asyncio.run(worker.warm())
            assert sorted(worker.states.cache) == customers
            assert rig.log == [] and rig.sent == []  # read, nothing written
            assert worker.metrics.registry.get_sample_value(
                "omnijourney_states_warmed_total") == 3
            for cid in customers:
                assert encode_state(0, worker.states.cache[cid]) == rig.table[cid.encode()]
        now[0] = t("2026-03-02T10:45:00Z")
        rig.run(rig.batch(ev("order.placed", "2026-03-02T10:40:00Z", "bo", "o-bo",
                             cart_id="k-bo", order_id="o1")))
        now[0] = t("2026-03-02T12:00:00Z")
        asyncio.run(worker.hand_ticks())
        assert not worker.index.pending
        outcome[warm] = ({cid: _commands_of(rig, cid) for cid in customers},
                         {cid: rig.table[cid.encode()] for cid in customers})
    assert outcome[True] == outcome[False]
    steps = {cid: [step for _, _, step in cmds] for cid, cmds in outcome[True][0].items()}
    assert steps["ana"] == steps["cy"] == ["cart_reminder"] and "cart_reminder" not in steps["bo"]


def test_nothing_is_warmed_while_a_tick_is_due_or_nobody_comes_due_soon(
        tmp_path: Path) -> None:
    now = [t("2026-03-02T10:30:00Z")]
    rig = _ahead_rig(tmp_path, ["ana", "bo"], 60.0, now)
    worker = rig.worker
    asyncio.run(worker.warm())  # 35 minutes to go, a minute ahead: nobody yet
    assert not worker.states.cache and worker.warm_after > 0
    now[0] = t("2026-03-02T11:05:30Z")  # both due: their ticks decode their own states
    worker.warm_after = 0.0
    asyncio.run(worker.warm())
    assert not worker.states.cache
    now[0] = t("2026-03-02T11:04:30Z")  # half a minute to go: both
    asyncio.run(worker.warm())
    assert sorted(worker.states.cache) == ["ana", "bo"]
    worker.states.cache.clear()
    worker.states.cache_size = 2  # warmed only into the cache's first half
    asyncio.run(worker.warm())
    assert len(worker.states.cache) == 1


def test_the_timer_warms_with_nothing_due_then_waits_half_the_span(tmp_path: Path) -> None:
    """The timer's pass starts a walk while nothing is due; the next walk comes half
    the span later, not at every pass; with ``warm_ahead`` 0 none starts."""
    for ahead in (3600.0, 0.0):
        rig = _ahead_rig(tmp_path / f"ahead-{ahead}", ["ana", "bo"], ahead,
                         [t("2026-03-02T10:30:00Z")])
        worker = rig.worker
        worker.diagnostics = True  # no signal handler in a test

        async def two_passes(worker: Worker = worker) -> asyncio.Future[None] | None:
            await worker.drive_waits()
            first = worker.warming
            if first is not None:
                await first
            await worker.drive_waits()
            assert worker.warming is first  # no second walk yet
            if worker.handing is not None:
                await worker.handing
            return first

        first = asyncio.run(two_passes())
        assert rig.log == []  # nothing due: nothing written
        if ahead:
            assert first is not None and sorted(worker.states.cache) == ["ana", "bo"]
            assert worker.warm_after - time.monotonic() > 1700
        else:
            assert first is None and not worker.states.cache


def test_an_assignment_has_the_due_index_and_the_state_cache_built_again(
        tmp_path: Path) -> None:
    """Even for the partitions it had: another worker may have written to them."""
    rig = _waiting_rig(tmp_path)
    worker = rig.worker
    assert "ana" in worker.states.cache  # decoded when the agent stored it
    # Meanwhile the partition was another worker's, which moved ana on; the restore put
    # its state in the table (no rebuild of the index between: two rebalances in a row).
    partition, st = decode_state(rig.table[b"ana"])
    st.profile.setdefault("attributes", {})["moved_on"] = "elsewhere"
    rig.table[b"ana"] = encode_state(partition, st)
    asyncio.run(worker.on_assigned(None, signal=None))
    assert worker.indexed is None
    assert not worker.states.cache  # nothing decoded before the restore is taken
    loaded = worker.states.load("ana")
    assert loaded is not None and loaded.profile["attributes"]["moved_on"] == "elsewhere"


def test_a_failed_round_trip_hands_its_batches_again_from_the_table(tmp_path: Path) -> None:
    """The send carrying bo's commands and ana's states fails (a record's error, not
    the cluster's): neither batch counts as written. Each is handled again alone, from
    the table: ana's commands go out a second time with the same ids (adapters drop
    them), bo's once, and both end as if ticked alone, nothing dead-lettered."""
    rig = _herd_rig(tmp_path / "herd", ["ana", "bo"])
    rig.fail_for, rig.failures = "ana", 1
    worker = rig.worker
    asyncio.run(worker.hand_ticks())
    assert rig.log == ["commands ana", "commands ana", "states ana", "commands bo",
                       "states bo"]
    assert not [o for o in rig.sent if o.topic == worker.settings.topics.dlq]
    assert not worker.index.pending and not worker.index.entries
    for i, cid in enumerate(["ana", "bo"]):
        commands, state = _ticked_alone(tmp_path / f"alone-{i}", cid)
        assert _commands_of(rig, cid) == sorted(commands * (2 if cid == "ana" else 1))
        assert rig.table[cid.encode()] == state


def test_a_lagging_partition_gets_its_ticks_through_the_ticks_topic(tmp_path: Path) -> None:
    """A partition with records not handled yet: a tick handed over in-process would act
    before them. It stays on the topic, to be read after them."""
    rig = _waiting_rig(tmp_path)
    worker = rig.worker
    worker.caught_up = lambda partition: False  # type: ignore[method-assign]
    asyncio.run(worker.hand_ticks())
    assert rig.log == [] and sorted(worker.index.entries) == ["ana", "bo"]
    assert not worker.index.pending
    assert not worker.metrics.registry.get_sample_value(
        "omnijourney_ticks_total", {"way": "in_process"})
    # The timer sends them tick records instead, each on its customer's partition.
    sent: list[tuple[str, bytes, int]] = []

    class Producer:
        async def send(self, topic: str, key: bytes, *rest: object) -> None:
            value, partition, _timestamp, _headers = rest  # as Faust's Producer.send
            assert isinstance(partition, int) and isinstance(value, bytes)
            sent.append((topic, key, partition))

    worker.app.producer = Producer()  # type: ignore[assignment]
    worker.diagnostics = True  # no signal handler in a test
    asyncio.run(worker.drive_waits())
    ticks = worker.settings.topics.ticks
    assert sorted(sent) == [(ticks, b"ana", 0), (ticks, b"bo", 0)]
    assert worker.index.pending == {"ana", "bo"}  # until the agent handles those records
    assert worker.handing is None  # nothing was handed over in-process
    assert worker.metrics.registry.get_sample_value(
        "omnijourney_ticks_total", {"way": "topic"}) == 2


def test_in_process_ticks_wait_their_turn_behind_the_agents_batch_and_a_revoke_waits_for_them(
        tmp_path: Path) -> None:
    """One batch at a time on the table: a timer's batch started while the agent's is
    being written waits for it (else both would read the same customers' old states), and
    a rebalance's revoke waits for the timer's batch in flight (else its states could
    reach the changelog after another worker took the partition)."""
    rig = _waiting_rig(tmp_path, ack_delay=0.05)
    worker = rig.worker
    worker.caught_up = lambda partition: True  # type: ignore[method-assign]
    agent = Batches([rig.batch(signup(customer="cy", at="2026-03-02T10:06:00Z"),
                               signup(customer="dee", at="2026-03-02T10:06:00Z"))])
    revoked: list[str] = []

    async def until(entry: str) -> None:
        while entry not in rig.log:
            await asyncio.sleep(0.001)

    async def scene() -> None:
        stream = asyncio.ensure_future(worker.run_stream(agent))  # type: ignore[arg-type]
        await until("commands cy,dee")  # the agent's batch is being written
        timer = asyncio.ensure_future(worker.hand_ticks())
        # The timer's batch is being written. It was taken from the index once the turn
        # was the timer's: cy and dee, stored by then, are due too (their welcome's
        # follow-up, by the wall clock).
        await until("commands ana,bo,cy,dee")
        assert "states ana,bo,cy,dee" not in rig.log
        await worker.on_revoked(None, signal=None)
        revoked.extend(rig.log)
        await asyncio.gather(stream, timer)

    asyncio.run(scene())
    rig.log[:] = [x for x in rig.log if not x.startswith("released")]
    revoked[:] = [x for x in revoked if not x.startswith("released")]
    assert rig.log[:2] == ["commands cy,dee", "states cy,dee"]
    assert rig.log[2:4] == ["commands ana,bo,cy,dee", "states ana,bo,cy,dee"]
    assert revoked[:4] == rig.log[:4]  # the revoke came back only once both were written


class _Consumer:
    """The two things ``Worker.caught_up`` asks Faust's consumer: each partition's end as
    the broker last said it, and the offset Faust last delivered (or, after an assignment,
    the committed position it started from)."""

    def __init__(self, ends: dict[tuple[str, int], int | None],
                 delivered: dict[tuple[str, int], int]) -> None:
        self.ends = ends
        self._read_offset = {TP(t, p): o for (t, p), o in delivered.items()}

    def highwater(self, tp: TP) -> int | None:
        if (tp.topic, tp.partition) not in self.ends:
            raise AssertionError(f"not assigned: {tp}")  # as aiokafka's IllegalStateError
        return self.ends[(tp.topic, tp.partition)]


def test_a_partition_is_caught_up_only_when_every_record_the_broker_told_of_is_handled(
        tmp_path: Path) -> None:
    worker = Rig(tmp_path).worker
    t = worker.settings.topics
    sources = (t.touchpoints, t.ticks, t.deliveries, t.identified)
    empty = {(s, 0): 0 for s in sources}

    def caught_up(ends: dict[tuple[str, int], int | None],
                  delivered: dict[tuple[str, int], int] | None = None,
                  handled: dict[tuple[str, int], int] | None = None) -> bool:
        worker.app.consumer = _Consumer({**empty, **ends}, delivered or {})  # type: ignore[assignment]
        worker.read_to = dict(handled or {})
        return worker.caught_up(0)

    assert caught_up({})  # nothing on any source
    # Records up to offset 9 on the touchpoints: caught up once 9 is handled, not before.
    assert not caught_up({(t.touchpoints, 0): 10}, delivered={(t.touchpoints, 0): 9},
                         handled={(t.touchpoints, 0): 8})
    assert caught_up({(t.touchpoints, 0): 10}, delivered={(t.touchpoints, 0): 9},
                     handled={(t.touchpoints, 0): 9})
    # Fresh from an assignment: the committed position is the end (nothing new).
    assert caught_up({(t.ticks, 0): 4}, delivered={(t.ticks, 0): 4})
    # ... or it is not: a record at 3 was delivered (or is still to come), none handled.
    assert not caught_up({(t.ticks, 0): 4}, delivered={(t.ticks, 0): 3})
    assert not caught_up({(t.ticks, 0): 4})
    # No word from the broker yet on one source, or a source not assigned.
    assert not caught_up({(t.identified, 0): None})
    worker.app.consumer = _Consumer({}, {})  # type: ignore[assignment]
    assert not worker.caught_up(0)
