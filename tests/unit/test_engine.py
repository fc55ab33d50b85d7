"""The runtime's batch logic without a broker: decode, evaluate, route, dead-letter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
import structlog.testing

from omnijourney.codecs import clock_record, decode_any, decode_command, encode_event, tick_record
from omnijourney.config import load
from omnijourney.core import CustomerState
from omnijourney.runtime.engine import BatchResult, Engine, Record
from omnijourney.runtime.timers import Clock, DueIndex
from omnijourney.settings import Settings, Topics
from tests.helpers import ev, signup, t

REPO = Path(__file__).resolve().parents[2]
JS = load(REPO / "journeys").journey_set
assert JS is not None
TOPICS = Topics.with_prefix("x-")


def rec(value: bytes, key: bytes | None = b"c1", topic: str = TOPICS.touchpoints,
        offset: int = 0) -> Record:
    return Record(topic, 3, offset, key, value)


class Store:
    def __init__(self) -> None:
        self.states: dict[str, CustomerState] = {}

    def load(self, cid: str) -> CustomerState | None:
        return self.states.get(cid)

    def apply(self, result: BatchResult) -> None:
        for cid, (_, st, _doc) in result.states.items():
            self.states[cid] = st


def test_events_become_commands_keyed_by_customer_with_id_headers() -> None:
    engine, store = Engine(JS, TOPICS, Clock("event")), Store()
    result = engine.process([rec(encode_event(signup(at="2026-03-02T10:00:00Z")))], store.load)
    (cmd,) = result.commands
    assert cmd.topic == "x-commands.sms"
    assert cmd.key == b"c1"
    body = decode_command(cmd.value)
    assert dict(cmd.headers)["command_id"] == body.command_id.encode()
    assert result.states["c1"][0] == 3  # written to the partition the event came from


def test_wrongly_keyed_events_are_republished_under_the_customer() -> None:
    engine = Engine(JS, TOPICS, Clock("event"))
    value = encode_event(signup())
    result = engine.process([rec(value, key=None)], Store().load)
    assert result.states == {}
    (out,) = result.other
    assert (out.topic, out.key, out.value) == (TOPICS.touchpoints, b"c1", value)


def test_dead_letters_carry_origin_and_reason() -> None:
    engine = Engine(JS, TOPICS, Clock("event"), extra_event_types=["loyalty.tier_changed"])
    bad_type = json.dumps({"event_id": "z", "type": "order.plaecd", "customer_id": "c1",
                           "occurred_at": "2026-03-02T10:00:00Z"}).encode()
    extra = json.dumps({"event_id": "y", "type": "loyalty.tier_changed", "customer_id": "c1",
                        "occurred_at": "2026-03-02T10:00:00Z"}).encode()
    result = engine.process([rec(b"", offset=7), rec(bad_type, offset=8), rec(extra, offset=9),
                             rec(b"{}", topic=TOPICS.ticks, offset=10)], Store().load)
    dead = [decode_any(o.value)[1] for o in result.other]
    assert [(d["offset"], d["topic"]) for d in dead] == [
        (7, TOPICS.touchpoints), (8, TOPICS.touchpoints), (10, TOPICS.ticks)]
    assert "neither Avro" in dead[0]["error"]
    assert "unknown event type 'order.plaecd'" in dead[1]["error"]
    assert "bad tick record" in dead[2]["error"]
    assert "c1" in result.states  # the accepted extra type was processed
    # Metrics get a low-cardinality kind per dead letter, and the type per evaluation.
    assert result.dead_kinds == ["invalid_event", "unknown_type", "invalid_tick"]
    assert result.inputs == ["loyalty.tier_changed"]
    assert len(result.eval_seconds) == result.evaluations == 1


def test_event_clock_and_due_index_drive_ticks_without_firing_early() -> None:
    clock, index, store = Clock("event"), DueIndex(), Store()
    engine = Engine(JS, TOPICS, clock)
    first = engine.process([rec(encode_event(signup(sms_opt_in=False,
                                                    at="2026-03-02T10:00:00Z")))], store.load)
    store.apply(first)
    due = store.states["c1"].next_due()
    assert due == t("2026-03-03T10:00:00Z")  # the welcome wait_for order, 24h
    index.update("c1", 3, due)
    assert index.due(clock) == []  # event time is still at the sign-up
    # Clock records ride the touchpoints partition, behind the events sent before them.
    engine.process([rec(clock_record(due - timedelta(seconds=1)), key=None)], store.load)
    assert index.due(clock) == []
    moved = engine.process([rec(clock_record(due), key=None)], store.load)
    assert (moved.states, moved.other, moved.evaluations) == ({}, [], 0)
    assert index.due(clock) == [("c1", 3, due)]
    result = engine.process([rec(tick_record("c1", due), topic=TOPICS.ticks)], store.load)
    assert [decode_command(c.value).step for c in result.commands] == ["welcome_followup"]
    # A tick the timer hands over in-process carries its customer and time, decoded: the
    # same evaluation, not read back from the value.
    handed = Record(TOPICS.ticks, 3, -1, b"c1", b"not read", ("c1", due))
    again = engine.process([handed], store.load)
    assert [c.value for c in again.commands] == [c.value for c in result.commands]
    assert (again.dead_reasons, again.ticked) == ([], ["c1"])


def test_only_a_well_formed_clock_record_moves_the_clock() -> None:
    clock = Clock("event")
    engine = Engine(JS, TOPICS, clock)
    result = engine.process([
        rec(b'{"watermark": "soon"}', key=None, offset=1),
        rec(b'{"watermark": "2026-03-02T10:00:00Z", "type": "x"}', key=None, offset=2),
        rec(clock_record(t("2026-03-02T10:00:00Z")), key=None, topic=TOPICS.ticks, offset=3),
    ], Store().load)
    assert clock.now(3) is None
    dead = [decode_any(o.value)[1] for o in result.other]
    assert [(d["offset"], d["topic"]) for d in dead] == [
        (1, TOPICS.touchpoints), (2, TOPICS.touchpoints), (3, TOPICS.ticks)]


def test_an_event_at_time_t_does_not_let_timers_due_at_t_fire_before_it() -> None:
    clock = Clock("event")
    clock.observe(0, t("2026-03-02T10:00:00Z"), inclusive=False)
    assert clock.now(0) == t("2026-03-02T10:00:00Z") - timedelta(microseconds=1)
    clock.observe(0, t("2026-03-01T10:00:00Z"), inclusive=False)  # time never goes back
    assert clock.now(0) == t("2026-03-02T10:00:00Z") - timedelta(microseconds=1)
    assert clock.now(1) is None
    wall = Clock("wall", wall=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    assert wall.now(5) == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_tick_from_beyond_what_this_worker_has_read_is_not_evaluated() -> None:
    """The worker-chaos failure, one cart: a worker read an order and later events, sent a
    tick at their time, and died before storing them. The next owner reads that tick
    before the events again; evaluated, it sent the reminder the order cancels."""
    from omnijourney.simulator import simulate

    signed = signup(at="2026-03-02T10:00:00Z", sms_opt_in=False)
    cart = ev("cart.item_added", "2026-03-02T10:30:00Z", cart_id="k1")
    order = ev("order.placed", "2026-03-02T11:10:00Z", cart_id="k1", order_id="o1")
    later = ev("product.viewed", "2026-03-02T14:00:00Z")
    # What the dead worker stored: the sign-up and the cart, and its clock there.
    stored = {3: t("2026-03-02T10:30:00Z")}
    engine, store = Engine(JS, TOPICS, Clock("event", stored=stored.get)), Store()
    live: list[str] = []

    def run(*records: Record) -> BatchResult:
        result = engine.process(list(records), store.load)
        store.apply(result)
        live.extend(decode_command(c.value).step for c in result.commands)
        return result

    run(rec(encode_event(signed), offset=0), rec(encode_event(cart), offset=1))
    stale = run(rec(tick_record("c1", t("2026-03-02T14:00:00Z")), topic=TOPICS.ticks))
    assert (stale.commands, stale.states, stale.ticked) == ([], {}, ["c1"])
    run(rec(encode_event(order), offset=2), rec(encode_event(later), offset=3))
    mark = engine.clock.now(3)
    assert mark is not None
    run(rec(tick_record("c1", mark), topic=TOPICS.ticks))
    expected = [c.step for c in simulate(JS, [signed, cart, order, later]).commands
                if c.send_at <= mark]  # the simulator runs on past the last event
    assert "cart_reminder" not in expected
    assert live == expected


def test_the_event_clock_is_stored_and_a_new_owner_starts_from_it() -> None:
    """A clock record read and committed by one worker is never read by the next owner
    of its partition: the time it set travels in the changelog instead. Before, the next
    owner's timers on that partition never fired (every win-back of one partition)."""
    first = Engine(JS, TOPICS, Clock("event"))
    mark = t("2026-06-01T00:00:00Z")
    moved = first.process([rec(clock_record(mark), key=None)], Store().load)
    assert moved.watermarks == {3: mark}
    assert first.process([rec(clock_record(mark - timedelta(days=1)), key=None)],
                         Store().load).watermarks == {}  # time never goes back
    table: dict[int, datetime] = dict(moved.watermarks)
    clock = Clock("event", stored=table.get)
    assert (clock.now(3), clock.now(2)) == (mark, None)
    clock.observe(3, mark - timedelta(days=5), inclusive=True)
    assert clock.now(3) == mark  # an older event read again does not move it back
    table[3] = mark + timedelta(days=1)  # another owner moved it on meanwhile
    clock.forget()  # a rebalance
    assert clock.now(3) == mark + timedelta(days=1)
    index = DueIndex()
    index.update("c1", 3, mark)
    assert index.due(clock) == [("c1", 3, mark + timedelta(days=1))]


def test_a_tick_that_changes_nothing_is_handled_and_a_failed_one_is_not() -> None:
    """The timer marks a customer pending until its tick is handled; a tick that found
    nothing due (or no customer) must release it too, or that customer never ticks again."""
    clock = Clock("event")
    engine, store = Engine(JS, TOPICS, clock), Store()
    store.apply(engine.process([rec(encode_event(signup(sms_opt_in=False)))], store.load))
    engine.process([rec(clock_record(t("2026-03-02T11:00:00Z")), key=None)], store.load)
    early = engine.process([rec(tick_record("c1", t("2026-03-02T11:00:00Z")),
                                topic=TOPICS.ticks),
                            rec(tick_record("ghost", t("2026-03-02T11:00:00Z")),
                                topic=TOPICS.ticks)], store.load)
    assert early.ticked == ["c1", "ghost"] and early.commands == []
    bad = engine.process([rec(b'{"customer_id": "c1"}', topic=TOPICS.ticks)], store.load)
    assert (bad.ticked, bad.dead_kinds) == ([], ["invalid_tick"])


def test_ticks_for_unknown_customers_and_duplicates_write_nothing() -> None:
    engine, store = Engine(JS, TOPICS, Clock("event")), Store()
    assert engine.process([rec(tick_record("ghost", t("2026-03-02T10:00:00Z")),
                               topic=TOPICS.ticks)], store.load).states == {}
    e = ev("product.viewed", "2026-03-02T10:00:00Z")
    store.apply(engine.process([rec(encode_event(e))], store.load))
    again = engine.process([rec(encode_event(e))], store.load)
    assert again.states == {}
    assert again.commands == []


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "a:1,b:2")
    monkeypatch.setenv("OMNIJOURNEY_TOPIC_PREFIX", "stage-")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "u")
    s = Settings.from_env()
    assert s.kafka_python()["bootstrap_servers"] == ["a:1", "b:2"]
    assert s.kafka_python()["security_protocol"] == "SASL_SSL"
    assert s.topics.touchpoints == "stage-touchpoints"
    assert s.topics.command("email") == "stage-commands.email"
    assert (s.batch_size, s.producer_linger) == (500, 0.0)
    monkeypatch.setenv("OMNIJOURNEY_BATCH_SIZE", "1000")
    monkeypatch.setenv("OMNIJOURNEY_PRODUCER_LINGER", "0.005")
    assert (Settings.from_env().batch_size, Settings.from_env().producer_linger) == (1000, 0.005)
    assert s.producer_batch_bytes == 512 * 1024
    monkeypatch.setenv("OMNIJOURNEY_PRODUCER_BATCH_BYTES", "65536")
    assert Settings.from_env().producer_batch_bytes == 65536
    monkeypatch.delenv("OMNIJOURNEY_PRODUCER_BATCH_BYTES")
    assert (s.batch_log, s.fast_delivery) == (False, True)
    monkeypatch.setenv("OMNIJOURNEY_BATCH_LOG", "yes")
    monkeypatch.setenv("OMNIJOURNEY_FAST_DELIVERY", "0")
    assert (Settings.from_env().batch_log, Settings.from_env().fast_delivery) == (True, False)
    monkeypatch.setenv("OMNIJOURNEY_BATCH_LOG", "maybe")
    with pytest.raises(ValueError, match="OMNIJOURNEY_BATCH_LOG must be 1 or 0"):
        Settings.from_env()
    monkeypatch.delenv("OMNIJOURNEY_BATCH_LOG")
    assert (s.batch_window, s.fetch_wait) == (0.05, 0.05)
    monkeypatch.setenv("OMNIJOURNEY_BATCH_WINDOW", "0.2")
    monkeypatch.setenv("OMNIJOURNEY_FETCH_WAIT", "0")
    assert (Settings.from_env().batch_window, Settings.from_env().fetch_wait) == (0.2, 0.0)
    assert s.warm_ahead == 60.0
    monkeypatch.setenv("OMNIJOURNEY_WARM_AHEAD", "0")
    assert Settings.from_env().warm_ahead == 0.0
    for name, bad in (("OMNIJOURNEY_BATCH_SIZE", "0"), ("OMNIJOURNEY_BATCH_WINDOW", "0"),
                      ("OMNIJOURNEY_FETCH_WAIT", "30"), ("OMNIJOURNEY_WARM_AHEAD", "-1"),
                      ("OMNIJOURNEY_PRODUCER_BATCH_BYTES", "2000000"),
                      ("OMNIJOURNEY_PRODUCER_BATCH_BYTES", "0")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_a_click_report_ends_the_right_carts_wait_for() -> None:
    from omnijourney.codecs import encode_delivery
    from omnijourney.core.commands import DeliveryReport

    engine, store = Engine(JS, TOPICS, Clock("event")), Store()
    cart = ev("cart.item_added", "2026-03-02T11:00:00Z", cart_id="k1")
    store.apply(engine.process([rec(encode_event(signup(at="2026-03-02T10:00:00Z"))),
                                rec(encode_event(cart))], store.load))
    # The 1h wait passes (event time gets there) and the reminder goes out.
    reminder = engine.process([rec(clock_record(t("2026-03-02T12:00:00Z")), key=None),
                               rec(tick_record("c1", t("2026-03-02T12:00:00Z")),
                                   topic=TOPICS.ticks)], store.load)
    store.apply(reminder)
    (cmd,) = [decode_command(c.value) for c in reminder.commands]
    assert cmd.step == "cart_reminder"
    report = DeliveryReport(cmd.command_id, "c1", "email", "clicked", t("2026-03-02T12:30:00Z"),
                            journey="cart_abandonment", instance_key="k1")
    clicked = engine.process([rec(encode_delivery(report), topic=TOPICS.deliveries)],
                             store.load)
    kinds = [(x.kind, x.key) for x in clicked.trace]
    assert ("wait_for_matched", "k1") in kinds
    store.apply(clicked)
    assert "cart_abandonment#k1" not in store.states["c1"].instances
    # The same report again is a duplicate fact: nothing happens.
    again = engine.process([rec(encode_delivery(report), topic=TOPICS.deliveries)], store.load)
    assert [x.kind for x in again.trace] == ["duplicate_event"]


def test_the_worker_refuses_to_start_on_invalid_journeys(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text("trigger: {event: order.placed}\nsteps:\n  - {id: x, type: wiat}\n")
    out = subprocess.run([sys.executable, "-m", "omnijourney", "worker", "--journeys",
                          str(tmp_path), "--bootstrap", "127.0.0.1:1"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1
    assert "journeys are invalid, not starting" in out.stderr
    assert "bad.yaml:3: error: [step x] unknown step type 'wiat'" in out.stderr


def test_the_due_index_hands_out_each_due_customer_once_by_time_and_loses_none() -> None:
    """Issue 13: a heap per partition, so a tick costs what is due. What the old scan did
    must still hold: nothing early, nothing twice while its tick is on the way, nothing
    lost when the tick changed nothing or the state kept its due time."""
    clock = Clock("event")
    base = t("2026-03-02T10:00:00Z")
    index = DueIndex.of([(f"c{i}", i % 2, base + timedelta(minutes=i)) for i in range(10)]
                        + [("idle", 0, None)])
    clock.observe(0, base + timedelta(minutes=4), inclusive=True)
    clock.observe(1, base + timedelta(minutes=3), inclusive=True)
    got = index.due(clock)
    assert sorted(c for c, _, _ in got) == ["c0", "c1", "c2", "c3", "c4"]  # none early
    assert index.due(clock) == []  # handed out: pending until handled
    index.update("c0", 0, base + timedelta(minutes=30))  # its tick moved it on
    index.release("c1")  # its tick changed nothing: in line again
    index.update("c2", 0, base + timedelta(minutes=2))  # same due time, kept
    index.update("c3", 1, None)  # no more waits
    assert sorted(c for c, _, _ in index.due(clock)) == ["c1", "c2"]
    index.update("c5", 1, base)  # moved earlier: the old heap item is stale, not a repeat
    clock.observe(1, base + timedelta(minutes=9), inclusive=True)
    assert sorted(c for c, _, _ in index.due(clock, {1})) == ["c5", "c7", "c9"]
    assert "c3" not in index.entries and "idle" not in index.entries


def test_the_due_index_names_who_is_due_soon_without_handing_anyone_out() -> None:
    """Warming ahead walks the index for who comes due within a span: exactly those
    (already due ones too), neither handed out nor superseded, earliest first across the
    partitions, a few at a time; the index itself is left as it was. Checked against a
    plain scan of the entries, over random heaps with updates and ticks on their way;
    changed between two steps of the walk, it names no one at a time no longer theirs."""
    import random

    rng = random.Random(13)
    base = t("2026-03-02T10:00:00Z")
    for _ in range(200):
        clock = Clock("event")
        rows = [(f"c{i}", rng.randrange(3), base + timedelta(seconds=rng.randrange(600)))
                for i in range(rng.randrange(1, 60))]
        index = DueIndex.of(rows)
        for cid, part, _ in rng.sample(rows, len(rows) // 3):  # moved: old heap items stale
            index.update(cid, part, base + timedelta(seconds=rng.randrange(600)))
        for p in range(3):
            clock.observe(p, base + timedelta(seconds=rng.randrange(200)), inclusive=True)
        handed = {c for c, _, _ in index.due(clock, limit=rng.randrange(5))}  # pending
        ahead = timedelta(seconds=rng.randrange(300))
        entries, heaps = dict(index.entries), {p: list(h) for p, h in index._heaps.items()}
        walk, got = index.walk(clock, ahead, [0, 1, 2]), []
        while not walk.done:
            got += walk.take(rng.randrange(1, 8))
        assert got == [cid for _, cid in sorted(
            (due, cid) for cid, (part, due) in entries.items()
            if cid not in handed and due <= clock.now(part) + ahead)]
        assert index.entries == entries and index.pending == handed
        assert {p: list(h) for p, h in index._heaps.items()} == heaps
        assert index.any_due(clock, [0, 1, 2]) == any(
            h and h[0][0] <= clock.now(p) for p, h in heaps.items())
        # Changed half-way: moved, handed out or done with waiting since the walk began.
        walk = index.walk(clock, ahead, [0, 1, 2])
        first = walk.take(len(rows) // 2)
        for cid, part, _ in rng.sample(rows, len(rows) // 3):
            index.update(cid, part, rng.choice([None, base + timedelta(seconds=rng.randrange(600))]))
        index.due(clock, limit=2)
        rest = []
        while not walk.done:
            rest += walk.take(3)
        for cid in rest:
            part, due = index.entries[cid]
            assert cid not in index.pending and due <= clock.now(part) + ahead
            assert entries.get(cid) == (part, due)  # named at a time that is still its own
        assert len(set(first + rest)) == len(first + rest)
    assert DueIndex().walk(Clock("event"), timedelta(hours=1), [0]).done
    assert not DueIndex().any_due(Clock("event"), [0])


def test_states_warmed_ahead_are_what_the_table_holds_and_never_push_others_out() -> None:
    """``StateStore.warm`` decodes into the cache what ``load`` would decode from the
    table; it passes over states already cached, customers the table no longer holds and
    values that do not read (their tick finds them, as it would have); it stops when the
    cache is full rather than evict anything; a state written after it replaces it."""
    from omnijourney.codecs import encode_state
    from omnijourney.runtime.states import StateStore

    engine, store = Engine(JS, TOPICS, Clock("event")), Store()
    store.apply(engine.process([rec(encode_event(signup(customer=c)), key=c.encode())
                                for c in ("a", "b", "c", "d")], store.load))
    data = {c.encode(): encode_state(0, st) for c, st in store.states.items()}
    data[b"bad"] = b'{"p":0,"d":"2026-03-03T10:00:00Z","s":{"customer_id":7}}'
    states = StateStore(lambda: data, cache_size=3)
    kept = CustomerState("a")
    states.cache["a"] = kept  # written by this worker: the truth already
    assert states.warm(["a", "gone", "bad", "b", "c", "d"]) == 2  # b and c: then full
    assert list(states.cache) == ["a", "b", "c"] and states.cache["a"] is kept
    assert encode_state(0, states.cache["b"]) == data[b"b"]
    assert encode_state(0, states.load("c")) == data[b"c"]  # handed over, out of the cache
    assert "c" not in states.cache
    newer = CustomerState("b")
    states.put("b", newer, encode_state(0, newer))
    assert states.load("b") is newer
    roomy = StateStore(lambda: data, cache_size=10)
    assert roomy.warm(["a", "b", "c", "d"], limit=2) == 2 and list(roomy.cache) == ["a", "b"]


def test_the_timer_index_is_built_from_the_head_of_each_value_and_old_values_still_read() -> None:
    """Issue 13: the due time is stored ahead of the state, so a restore indexes a million
    customers without decoding a million states; values written before still read."""
    import json as _json

    from omnijourney.codecs import decode_state, encode_state, state_due
    from omnijourney.runtime.states import StateStore

    engine, store = Engine(JS, TOPICS, Clock("event")), Store()
    first = engine.process([rec(encode_event(signup(sms_opt_in=False)))], store.load)
    store.apply(first)
    waiting = store.states["c1"]
    new = encode_state(3, waiting)
    assert new.startswith(b'{"p":3,"d":"2026-03-03T10:00:00Z","s":')
    assert state_due(new) == (3, waiting.next_due())
    assert decode_state(new)[1].to_dict() == waiting.to_dict()
    old = _json.dumps({"p": 3, "s": waiting.to_dict()}).encode()  # as written before
    done = encode_state(5, CustomerState("c2"))
    assert (state_due(old), state_due(done)) == ((3, waiting.next_due()), (5, None))
    old_done = _json.dumps({"p": 5, "s": CustomerState("c4").to_dict()}).encode()
    # A head that only looks like "nothing due" is read the long way (and is unreadable).
    fake = b'{"p":x,"d":null,"s":{}}'
    data = {b"c1": old, b"c2": done, b"c3": new, b"c4": old_done, b"bad": b"{nope",
            b"fake": fake, b"c5": encode_state(4, waiting), b"\x00watermark:3": b"{}",
            b"c6": encode_state(12, CustomerState("c6")), b"c7": encode_state(12, waiting)}
    store = StateStore(lambda: data)
    with structlog.testing.capture_logs() as logs:
        rows = sorted(store.waiting(frozenset({3, 5})))
    assert [(e["event"], e["count"]) for e in logs] == [("unreadable_states", 2)]  # bad, fake
    # Only who waits, on the partitions owned: not c2 or c4 (nothing due), not c5 (4).
    assert rows == [("c1", 3, waiting.next_due()), ("c3", 3, waiting.next_due())]
    assert sorted(store.waiting(frozenset({4}))) == [("c5", 4, waiting.next_due())]
    assert sorted(store.waiting(frozenset({12}))) == [("c7", 12, waiting.next_due())]
    # The glance is at the head encode_state writes, on every partition it covers.
    from omnijourney.codecs import NOTHING_DUE, NOTHING_DUE_LENGTH
    assert all(encode_state(p, CustomerState("x"))[:NOTHING_DUE_LENGTH] in NOTHING_DUE
               for p in range(10))
    assert encode_state(3, waiting)[:NOTHING_DUE_LENGTH] not in NOTHING_DUE


def test_state_values_keep_every_value_exactly_whichever_json_writer_wrote_them() -> None:
    """States are written with orjson, falling back to json for what orjson refuses; the
    values read back are the values written, and states json wrote before still read."""
    import json as _json

    from omnijourney.codecs import decode_state, encode_state

    st_ = CustomerState("c1")
    st_.profile.update({"first_name": "Zoë 😀 \"Jo\" <b>", "attributes": {
        "score": 51, "ratio": 0.1 + 0.2, "tiny": 5e-324, "big": 2**63 - 1, "flag": True,
        "none": None, "list": [1, "two", {"three": 3.0}]}})
    doc = encode_state(2, st_)
    assert decode_state(doc)[1].to_dict() == st_.to_dict()
    assert "😀".encode() in doc  # UTF-8, not \\u escapes: fewer bytes
    huge = CustomerState("c2")
    # Past 64 bits: orjson refuses to write them (json does) and would read them as
    # floats (json reads them as written), the edges included.
    edges = {"id": 2**70, "u64": 2**64, "below": -(2**63) - 1, "minus": -(2**70)}
    huge.profile["attributes"] = dict(edges)
    back = decode_state(encode_state(0, huge))[1]
    assert back.profile["attributes"] == edges
    assert all(type(v) is int for v in back.profile["attributes"].values())
    before = (b'{"p":2,"d":null,"s":' + _json.dumps(st_.to_dict(), separators=(",", ":"))
              .encode() + b"}")  # what the previous release wrote (ASCII, \\u escapes)
    assert decode_state(before)[1].to_dict() == st_.to_dict()


def test_events_kept_in_a_state_read_back_as_the_checked_way_reads_them() -> None:
    """``stored_event`` (the short way for a state's events) gives what
    ``parse_event(trusted=True)`` gives, and raises what it raises, whatever the shape."""
    from omnijourney.core.events import InvalidEvent, parse_event, stored_event

    at = "2026-03-02T10:00:00Z"
    good = {"event_id": "e1", "type": "cart.item_added", "customer_id": "c1",
            "occurred_at": at, "source": "web", "properties": {"cart_id": "k1", "n": 2}}
    shapes = [
        good, {**good, "source": None}, {k: v for k, v in good.items() if k != "source"},
        {**good, "properties": {}}, {**good, "occurred_at": "2026-03-02T11:00:00+01:00"},
        {**good, "identifiers": {"email": " Ana@Example.COM ", "anonymous_id": "a-1"}},
        {**good, "identifiers": {}}, {**good, "customer_id": "", "identifiers": {"email":
                                                                              "a@b.co"}},
        # damaged: each must fail as the checked way fails
        {**good, "type": "Cart Added"}, {**good, "event_id": " "}, {**good, "customer_id": 7},
        {**good, "properties": ["x"]}, {**good, "source": 3}, {**good, "occurred_at": "soon"},
        {**good, "extra": 1}, {k: v for k, v in good.items() if k != "occurred_at"},
        ["not", "an", "object"],
    ]
    for shape in shapes:
        try:
            expected: object = parse_event(shape, trusted=True)
        except (InvalidEvent, ValueError, KeyError, TypeError) as exc:
            expected = type(exc)
        try:
            got: object = stored_event(shape)
        except (InvalidEvent, ValueError, KeyError, TypeError) as exc:
            got = type(exc)
        assert got == expected, shape
    # A run whose last event is still its trigger reads it once, shared.
    st_ = CustomerState.from_dict({"customer_id": "c1", "instances": {"j#k": {
        "journey": "j", "version": 1, "key": "k", "instance_id": "i", "trigger": good,
        "last_event": dict(good), "entered_at": at, "step": "s", "status": "wait",
        "due_at": at}}})
    run = st_.instances["j#k"]
    assert run.last_event is run.trigger and run.trigger == parse_event(good, trusted=True)


def test_identity_runs_through_the_engine_topic_by_topic() -> None:
    """An anonymous event goes to its identifier's partition; the hop there names its
    customer and publishes it on identified; a merge's absorbed state, larger than any
    event may be, is taken in rather than dead-lettered as too large."""
    from omnijourney.codecs import encode_message
    from omnijourney.core.identity import Absorbed, generated_id, identifier_key

    engine, store = Engine(JS, TOPICS, Clock("event")), Store()
    anon = json.dumps({"event_id": "a1", "type": "product.viewed", "customer_id": "",
                       "occurred_at": "2026-03-02T10:00:00Z",
                       "identifiers": {"anonymous_id": "a-1"}}).encode()
    (hop,) = engine.process([rec(anon, key=None)], store.load).other
    key = identifier_key("anonymous_id", "a-1")
    assert (hop.topic, hop.key) == (TOPICS.identity, key.encode())
    claims: dict[str, str] = {}
    out = engine.resolve([Record(TOPICS.identity, 1, 0, hop.key, hop.value or b"")],
                         claims.get)
    cid = generated_id(key)
    assert out.claims == {key: (1, cid)}
    (identified,) = out.other
    assert (identified.topic, identified.key) == (TOPICS.identified, cid.encode())
    done = engine.process([rec(identified.value or b"", key=cid.encode(),
                               topic=TOPICS.identified)], store.load)
    store.apply(done)
    assert "browse_abandonment#" in store.states[cid].instances
    # An absorbed customer with a lot of history: well over the 64 KiB an event may be.
    big = CustomerState("cus_old", profile={"customer_id": "cus_old", "consent": {},
                                            "attributes": {f"a{i}": "x" * 100
                                                           for i in range(900)},
                                            "counts": {}})
    msg = Absorbed("cus_old", cid, big.to_dict(), datetime(2026, 3, 2, 11, tzinfo=UTC))
    value = encode_message(msg)
    assert len(value) > engine.limits.max_record_bytes
    merged = engine.process([rec(value, key=cid.encode(), topic=TOPICS.identified)],
                            store.load)
    assert merged.dead_reasons == []
    assert len(merged.states[cid][1].profile["attributes"]) == 900


def test_the_faust_app_produces_in_batches_of_the_settings_size(tmp_path: Path) -> None:
    from omnijourney.runtime.faustapp import faust_app

    for size in (Settings().producer_batch_bytes, 65536):
        app = faust_app(Settings(producer_batch_bytes=size, datadir=str(tmp_path)))
        assert app.conf.producer_max_batch_size == size


def test_a_state_loaded_for_one_evaluation_is_changed_in_place_and_never_kept_half_done(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The state table hands the state it loads (out of its cache, or decoded) to the
    evaluator, which changes it in place. It is kept (cached) again only as the stored
    result: an evaluation that fails half-way leaves nothing of itself, whether the
    state came from the cache or the bytes, and the next tick reads the stored bytes
    again and gives what a fresh evaluation gives. A repeat (nothing changed) stores
    nothing and keeps nothing."""
    from omnijourney.codecs import decode_state, encode_state
    from omnijourney.core import TICK, evaluate
    from omnijourney.core.state import CustomerState as State
    from omnijourney.runtime.states import StateStore

    clock = Clock("event")
    engine, mem = Engine(JS, TOPICS, clock), Store()
    first = engine.process([rec(encode_event(signup(sms_opt_in=False)))], mem.load)
    waiting = first.states["c1"][1]
    due = waiting.next_due()
    data = {b"c1": encode_state(3, waiting)}
    store = StateStore(lambda: data)
    engine.process([rec(clock_record(due), key=None)], store.load)
    loaded = store.load("c1")
    assert loaded is not None and loaded.unshared and "c1" not in store.cache
    assert loaded is not store.load("c1")  # each load its own, none kept

    import omnijourney.runtime.engine as engine_module

    real_encode = engine_module.encode_state

    def half_done(partition: int, state: State) -> bytes:
        # The evaluator changed the loaded state in place (the wait fired, the send is
        # made); then a fault. Injected past the core: a compiled core (omnijourney/
        # native.py) calls its own methods directly, whatever a test patches on them.
        state.profile["damaged"] = True
        raise RuntimeError("fault past the steps")

    tick = rec(tick_record("c1", due), topic=TOPICS.ticks)
    expected = evaluate(JS, decode_state(data[b"c1"])[1], TICK, due)
    assert expected.commands
    for cached in (False, True):
        if cached:  # from the cache this time: the same state, decoded and kept
            store.put("c1", decode_state(data[b"c1"])[1], data[b"c1"])
            assert "c1" in store.cache
        monkeypatch.setattr(engine_module, "encode_state", half_done)
        failed = engine.process([tick], store.load)
        monkeypatch.setattr(engine_module, "encode_state", real_encode)
        assert (failed.dead_kinds, failed.states, failed.commands) == \
            (["internal_error"], {}, [])
        assert "c1" not in store.cache
        done = engine.process([tick], store.load)
        assert [decode_command(c.value).to_dict() for c in done.commands] == \
            [c.to_dict() for c in expected.commands]
        stored = done.states["c1"][1]
        assert stored.to_dict() == expected.state.to_dict() and "damaged" not in stored.profile
        assert not stored.unshared

    store.put("c1", stored, done.states["c1"][2])
    again = store.load("c1")
    assert again is stored and again.unshared and "c1" not in store.cache  # handed over
    store.put("c1", again, done.states["c1"][2])
    view = ev("product.viewed", "2026-03-03T10:00:00Z")
    data[b"c1"] = encode_state(3, evaluate(JS, stored, view, view.occurred_at).state)
    store.cache.clear()
    assert engine.process([rec(encode_event(view))], store.load).states == {}  # a repeat
    assert "c1" not in store.cache
