"""The log lines' way out: JSON that reads back as what was logged, whatever it holds, and
a batch's decision lines written together, after the batch, in order."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from omnijourney.codecs import encode_event
from omnijourney.config import load
from omnijourney.core import CustomerState
from omnijourney.logs import LineSink, configure, held, render_json
from omnijourney.runtime.decisions import log_batch
from omnijourney.runtime.engine import BatchResult, Engine, Record
from omnijourney.runtime.timers import Clock
from omnijourney.settings import Topics
from tests.helpers import ev, signup

REPO = Path(__file__).resolve().parents[2]


class Stream(io.StringIO):
    """A text stream that counts its writes and flushes (not a terminal: JSON lines)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stream]:
    out = Stream()
    monkeypatch.setattr(sys, "stderr", out)
    configure("info")
    # Loggers bound during the test must not keep this stream for the tests after it.
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield out
    finally:
        structlog.reset_defaults()


def lines(out: Stream) -> list[dict[str, object]]:
    return [json.loads(x) for x in out.getvalue().splitlines()]


@pytest.mark.parametrize("value", [
    "plain", "<script>alert('x')</script>", 'quote " and \\ backslash', "line\nbreak\ttab\x00",
    "\u2028\u2029 séparateurs ünïcödé 🙂", 2**63 - 1, -(2**63), 1.5, None, True,
    ["a", 1, {"b": None}], {"nested": {"deep": [1, 2, 3]}},
])
def test_a_line_reads_back_as_what_was_logged(value: object) -> None:
    event = {"event": "x", "value": value}
    line = render_json(event)
    assert "\n" not in line
    assert json.loads(line) == event


@pytest.mark.parametrize(("value", "expected"), [
    (2**64, 2**64),                      # past what orjson writes
    (-(2**70), -(2**70)),
    ({1: "a", 2: "b"}, {"1": "a", "2": "b"}),  # keys that are not strings
    ("lone \ud800 surrogate", "lone \ud800 surrogate"),
])
def test_what_orjson_refuses_is_written_by_json(value: object, expected: object) -> None:
    line = render_json({"event": "x", "value": value}, default=repr)
    assert json.loads(line) == {"event": "x", "value": expected}


def test_an_object_neither_knows_is_written_as_its_repr(stream: Stream) -> None:
    structlog.get_logger("t").info("odd", error=ValueError("boom"), ids={3})
    (line,) = lines(stream)
    assert (line["event"], line["error"], line["ids"]) == ("odd", "ValueError('boom')", "{3}")
    assert line["level"] == "info" and line["timestamp"]


def test_each_line_is_written_and_flushed_as_it_is_logged(stream: Stream) -> None:
    log = structlog.get_logger("t")
    log.info("one")
    assert [x["event"] for x in lines(stream)] == ["one"] and stream.flushes == 1
    log.warning("two", n=2)
    assert [x["event"] for x in lines(stream)] == ["one", "two"] and stream.flushes == 2


def test_lines_held_are_written_together_in_order_when_the_hold_ends(stream: Stream) -> None:
    log = structlog.get_logger("t")
    with held():
        for i in range(5):
            log.info("line", i=i)
            assert stream.getvalue() == ""  # nothing out yet
        with held():  # nested: the outer hold decides
            log.info("inner")
        assert stream.getvalue() == ""
    assert [(x["event"], x.get("i")) for x in lines(stream)] == [
        *[("line", i) for i in range(5)], ("inner", None)]
    assert (stream.writes, stream.flushes) == (1, 1)
    log.info("after")  # and back to a line at a time
    assert lines(stream)[-1]["event"] == "after" and stream.flushes == 2


def test_held_lines_are_written_even_when_the_block_raises(stream: Stream) -> None:
    def fails() -> None:
        with held():
            structlog.get_logger("t").info("before the error")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fails()
    assert [x["event"] for x in lines(stream)] == ["before the error"]


def _a_batch() -> BatchResult:
    """Three sign-ups (a send each), a view that decides nothing, a record that is not an
    event (a dead letter)."""
    js = load(REPO / "journeys").journey_set
    assert js is not None
    topics = Topics.with_prefix("x-")
    engine = Engine(js, topics, Clock("event"))
    states: dict[str, CustomerState] = {}
    records = [Record(topics.touchpoints, 0, i, f"c{i}".encode(), encode_event(
        signup(at="2026-03-02T10:00:00Z", customer=f"c{i}", email=f"c{i}@example.com",
               phone="+15550100"))) for i in range(3)]
    records.append(Record(topics.touchpoints, 0, 3, b"c0", encode_event(
        ev("product.viewed", "2026-03-02T10:01:00Z", customer="c0", product_id="p1"))))
    records.append(Record(topics.touchpoints, 0, 4, b"c1", b"\xc3\x01 not an event"))
    return engine.process(records, states.get)


def test_a_batchs_decision_lines_are_one_write(stream: Stream) -> None:
    result = _a_batch()
    log_batch(result)
    got = lines(stream)
    evaluated = [x["customer_id"] for x in got if x["event"] == "evaluated"]
    assert evaluated == ["c0", "c1", "c2"]  # the view decided nothing: at debug, not shown
    assert [x["customer_id"] for x in got if x["event"] == "sent"] == ["c0", "c1", "c2"]
    assert [x["event"] for x in got][-1] == "dead_letter"  # through structlog, same write
    assert (stream.writes, stream.flushes) == (1, 1)


def test_a_sink_without_a_hold_writes_each_line() -> None:
    out = Stream()
    sink = LineSink(out)
    sink.write("a")
    sink.write("b")
    assert out.getvalue() == "a\nb\n" and (out.writes, out.flushes) == (2, 2)


def test_lines_handed_over_together_are_one_write_in_order() -> None:
    out = Stream()
    sink = LineSink(out)
    sink.write_all([])
    assert (out.writes, out.flushes) == (0, 0)
    sink.write_all(["a", "b", "c"])
    assert out.getvalue() == "a\nb\nc\n" and (out.writes, out.flushes) == (1, 1)
    with sink.held():  # kept with a hold's lines, in order
        sink.write("d")
        sink.write_all(["e", "f"])
        sink.write("g")
    assert out.getvalue() == "a\nb\nc\nd\ne\nf\ng\n" and (out.writes, out.flushes) == (2, 2)



@pytest.mark.parametrize("level", ["debug", "info", "warning"])
def test_decision_lines_written_directly_read_as_structlogs_own(
        stream: Stream, level: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``logs.lines`` writes what structlog's chain writes: the same fields in the same
    order, at the same levels, filtered by the same level; only the timestamp may differ."""
    from omnijourney.logs import lines as direct_lines
    from omnijourney.runtime.decisions import log_evaluation

    monkeypatch.setattr(sys, "stderr", stream)  # pytest's capture put its own back
    configure(level)
    structlog.configure(cache_logger_on_first_use=False)
    result = _a_batch()
    writer = direct_lines()
    assert writer is not None
    for e in result.evaluated:
        log_evaluation(e, writer)
    direct = lines(stream)
    stream.seek(0)
    stream.truncate()
    for e in result.evaluated:
        log_evaluation(e, None)  # through structlog
    chained = lines(stream)

    def shown(got: list[dict[str, object]]) -> list[list[tuple[str, object]]]:
        return [[(k, v) for k, v in x.items() if k != "timestamp"] for x in got]

    assert shown(direct) == shown(chained)
    assert [list(x) for x in direct] == [list(x) for x in chained]  # key order too
    events = [x["event"] for x in direct]
    if level == "warning":
        assert direct == []
    else:
        assert events.count("sent") == 3
        assert ("debug" in [x["level"] for x in direct]) == (level == "debug")
    for x in direct:
        assert str(x["timestamp"]).endswith("Z")


def test_log_batch_goes_through_structlog_while_tests_capture_it(stream: Stream) -> None:
    """Capturing (structlog's ``capture_logs`` replaces the chain): lines go to the capture,
    none straight to the sink; after it, straight to the sink again."""
    result = _a_batch()
    with structlog.testing.capture_logs() as captured:
        log_batch(result)
    assert [x["event"] for x in captured].count("sent") == 3
    assert any(x["event"] == "dead_letter" for x in captured)
    assert stream.getvalue() == ""
    log_batch(result)
    got = lines(stream)
    assert [x["event"] for x in got].count("sent") == 3
    assert (stream.writes, stream.flushes) == (1, 1)


def test_direct_lines_carry_bound_contextvars(stream: Stream) -> None:
    from omnijourney.logs import lines as direct_lines

    structlog.contextvars.bind_contextvars(worker="w1")
    try:
        writer = direct_lines()
        assert writer is not None
        writer.write(20, "sent", {"customer_id": "c<1>\"\n", "n": 2**64})
        writer.write(10, "quiet", {"customer_id": "c2"})  # below info: not written
    finally:
        structlog.contextvars.clear_contextvars()
    (line,) = lines(stream)
    assert line["worker"] == "w1" and line["customer_id"] == "c<1>\"\n" and line["n"] == 2**64
    assert (line["event"], line["level"]) == ("sent", "info")


def test_a_writer_holding_its_lines_hands_them_over_in_one_write(stream: Stream) -> None:
    from omnijourney.logs import lines as direct_lines

    writer = direct_lines()
    assert writer is not None
    writer.hold()
    writer.write(20, "sent", {"customer_id": "c1"})
    writer.write(10, "quiet", {"customer_id": "c2"})  # below info: not kept either
    writer.write(20, "sent", {"customer_id": "c3"})
    assert stream.getvalue() == ""
    writer.release()
    assert [x["customer_id"] for x in lines(stream)] == ["c1", "c3"]
    assert (stream.writes, stream.flushes) == (1, 1)
    writer.write(20, "sent", {"customer_id": "c4"})  # released: written as it comes
    assert (stream.writes, stream.flushes) == (2, 2)
