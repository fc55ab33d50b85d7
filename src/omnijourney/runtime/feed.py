"""Plain Kafka for the tools: send events and clock records, read topics back decoded.

``omnijourney produce``, ``tail`` and ``dev`` use it, and so do the tests and benchmarks."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from omnijourney import kafkaclients
from omnijourney.codecs import CodecError, clock_record, decode_any, encode_event
from omnijourney.core.events import Event
from omnijourney.core.identity import identifier_key
from omnijourney.kafkaclients import KafkaProducer, TopicPartition
from omnijourney.settings import Settings


def produce_events(settings: Settings, events: list[Event], *, watermark: datetime | None,
                   as_json: bool = False, settle: float | None = None) -> int:
    """``settle``: a replay of a timeline whose events carry identifiers. Each such event
    is resolved, and merges settled, between partitions, which takes a few round trips;
    in real time the next event comes minutes later, in a replay at once, and could
    overtake it (a store order read before the sign-up that linked its loyalty id). So
    after each one, and before the final watermark, wait (up to ``settle`` seconds) until
    the engine has committed everything on its topics."""
    producer = kafkaclients.producer(settings, acks="all", linger_ms=5)
    for ev in events:
        value = json.dumps(ev.to_dict()).encode() if as_json else encode_event(ev)
        # Keyed by customer; without one by its strongest identifier's key (a digest:
        # no address in a Kafka key). The engine routes it either way.
        first = next(iter(ev.identifiers.items()), None)
        key = (ev.customer_id or (identifier_key(*first) if first else "")).encode()
        producer.send(settings.topics.touchpoints, key=key, value=value)
        if settle is not None and ev.identifiers:
            producer.flush()
            wait_settled(settings, settle)
    producer.flush()
    if watermark is not None:
        if settle is not None:
            wait_settled(settings, settle)
        send_watermark(producer, settings, watermark)
    producer.close()
    return len(events)


def wait_settled(settings: Settings, timeout: float) -> bool:
    """Until the engine's group has committed every record on its topics (True), or
    ``timeout`` passed (False). Committed offsets are read before end offsets: a record is
    committed only after what it sent on is acked, so a step still in flight always
    shows as a record not yet committed."""
    t = settings.topics
    topics = [t.touchpoints, t.ticks, t.deliveries, t.identity, t.identified]
    group = kafkaclients.consumer(settings, group_id=settings.app_id, enable_auto_commit=False)
    probe = kafkaclients.consumer(settings, enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    try:
        tps = [TopicPartition(topic, p) for topic in topics
               for p in sorted(probe.partitions_for_topic(topic) or ())]
        while time.monotonic() < deadline:
            committed = {tp: group.committed(tp) or 0 for tp in tps}
            ends = probe.end_offsets(tps)
            if all(committed[tp] >= ends[tp] for tp in tps):
                return True
            time.sleep(0.2)
        return False
    finally:
        group.close()
        probe.close()


def send_watermark(producer: KafkaProducer, settings: Settings, at: datetime) -> None:
    """Move event time forward on every partition (replays: lets final waits fire).

    A clock record goes to each touchpoints partition, behind the events already there,
    so it never overtakes one of them."""
    topic = settings.topics.touchpoints
    parts = producer.partitions_for(topic) or set(range(settings.partitions))
    for p in sorted(parts):
        producer.send(topic, value=clock_record(at), partition=p)
    producer.flush()


def consume(settings: Settings, topics: list[str], *, idle: float, max_records: int | None,
            from_beginning: bool = True) -> list[tuple[str, dict[str, Any]]]:
    consumer = kafkaclients.consumer(settings, *topics,
                                     auto_offset_reset="earliest" if from_beginning else "latest",
                             enable_auto_commit=False, consumer_timeout_ms=int(idle * 1000))
    out = []
    try:
        for msg in consumer:
            try:
                _, rec = decode_any(msg.value)
            except (CodecError, ValueError) as exc:
                rec = {"undecodable": msg.value[:200].hex(), "error": str(exc)}
            out.append((msg.topic, rec))
            if max_records is not None and len(out) >= max_records:
                break
    finally:
        consumer.close()
    return out
