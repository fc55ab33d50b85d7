"""Plain Kafka for the tools: send events and clock records, read topics back decoded.

``omnijourney produce``, ``tail`` and ``dev`` use it, and so do the tests and benchmarks."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from omnijourney import kafkaclients
from omnijourney.codecs import CodecError, clock_record, decode_any, encode_event
from omnijourney.core.events import Event
from omnijourney.kafkaclients import KafkaProducer
from omnijourney.settings import Settings


def produce_events(settings: Settings, events: list[Event], *, watermark: datetime | None,
                   as_json: bool = False) -> int:
    producer = kafkaclients.producer(settings, acks="all", linger_ms=5)
    for ev in events:
        value = json.dumps(ev.to_dict()).encode() if as_json else encode_event(ev)
        producer.send(settings.topics.touchpoints, key=ev.customer_id.encode(), value=value)
    producer.flush()
    if watermark is not None:
        send_watermark(producer, settings, watermark)
    producer.close()
    return len(events)


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
