"""Which commands a channel has settled: its compacted ``delivered`` topic, read whole at
start, written once per outcome (and once before an attempt, for providers that cannot
drop a repeat)."""

from __future__ import annotations

import json

from omnijourney import kafkaclients, wallclock
from omnijourney.core.timeutil import format_instant
from omnijourney.kafkaclients import TopicPartition
from omnijourney.runtime.reach import until_reachable
from omnijourney.settings import Settings

ATTEMPTING = "attempting"


class DeliveredLog:
    """command_id -> last recorded status, from the channel's compacted topic."""

    def __init__(self, settings: Settings, channel: str,
                 clock: wallclock.WallClock = wallclock.now) -> None:
        self.settings, self.clock = settings, clock
        self.topic = settings.topics.delivered(channel)
        self.ids: dict[str, str] = {}
        self.producer = kafkaclients.producer(settings, acks="all")

    def load(self) -> int:
        """Read the whole log; again while the cluster cannot answer (a broker away)."""
        return until_reachable(self._load, what=f"read {self.topic}")

    def _load(self) -> int:
        self.ids.clear()
        consumer = kafkaclients.consumer(self.settings, enable_auto_commit=False)
        try:
            parts = consumer.partitions_for_topic(self.topic) or set()
            tps = [TopicPartition(self.topic, p) for p in parts]
            if not tps:
                return 0
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            while any(consumer.position(tp) < end[tp] for tp in tps):
                for msgs in consumer.poll(timeout_ms=500).values():
                    for m in msgs:
                        if m.key:
                            self.ids[m.key.decode()] = _status_of(m.value)
        finally:
            consumer.close()
        return len(self.ids)

    def __contains__(self, command_id: object) -> bool:
        """Settled: delivered, expired, bounced or failed for good."""
        return self.ids.get(str(command_id), ATTEMPTING) != ATTEMPTING

    def unconfirmed(self, command_id: str) -> bool:
        """An attempt began and no outcome was recorded: a crash mid-send."""
        return self.ids.get(command_id) == ATTEMPTING

    def record(self, command_id: str, status: str) -> None:
        value = json.dumps({"status": status, "at": format_instant(self.clock())})
        self.producer.send(self.topic, key=command_id.encode(), value=value.encode()).get(30)
        self.ids[command_id] = status

    def close(self) -> None:
        self.producer.close()


def _status_of(value: bytes | None) -> str:
    try:
        return str(json.loads(value or b"{}").get("status") or "sent")
    except (ValueError, AttributeError):
        return "sent"  # a record we cannot read still means "settled"
