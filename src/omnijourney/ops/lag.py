"""Consumer lag per group, topic and partition: committed, end, lag and time lag.

Lag is ``end - committed``: the records the group has yet to process. Time lag is the age
of the oldest of them (now minus the timestamp of the record at the committed offset),
the number that says whether journeys keep up. A group that never committed counts every
retained record as unprocessed.

Groups are known from the settings (the engine is ``<app_id>``, each adapter
``<app_id>-adapter-<channel>``), so this needs no group-listing API — only OffsetFetch,
ListOffsets and Fetch, which every Kafka-protocol broker answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime

from omnijourney import kafkaclients
from omnijourney.core.channels import CHANNELS
from omnijourney.kafkaclients import KafkaConsumer, TopicPartition
from omnijourney.settings import Settings, adapter_group


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has not committed here
    end: int
    lag: int
    time_lag: float | None  # seconds; None when nothing is waiting

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def known_groups(settings: Settings) -> dict[str, list[str]]:
    """Our consumer groups and the topics each consumes."""
    t = settings.topics
    groups = {settings.app_id: [t.touchpoints, t.ticks, t.deliveries, t.identity,
                                t.identified]}
    for ch in CHANNELS:
        groups[adapter_group(settings, ch)] = [t.command(ch)]
    return groups


class LagReader:
    """Reads committed and end offsets, and the oldest waiting record's timestamp."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.probe = kafkaclients.consumer(settings, enable_auto_commit=False)
        self._group_clients: dict[str, KafkaConsumer] = {}

    def _group(self, group: str) -> KafkaConsumer:
        # A consumer that names the group but never subscribes: it fetches the group's
        # committed offsets without joining it (and commits nothing).
        if group not in self._group_clients:
            self._group_clients[group] = kafkaclients.consumer(
                self.settings, group_id=group, enable_auto_commit=False)
        return self._group_clients[group]

    def measure(self, groups: dict[str, list[str]], now: datetime) -> list[PartitionLag]:
        out: list[PartitionLag] = []
        waiting: dict[tuple[str, TopicPartition], int] = {}
        for group, topics in groups.items():
            tps = [TopicPartition(topic, p) for topic in topics
                   for p in sorted(self.probe.partitions_for_topic(topic) or ())]
            if not tps:
                continue
            ends = self.probe.end_offsets(tps)
            starts = self.probe.beginning_offsets(tps)
            client = self._group(group)
            for tp in tps:
                committed = client.committed(tp)
                first = committed if committed is not None else starts[tp]
                lag = max(0, ends[tp] - first)
                out.append(PartitionLag(group, tp.topic, tp.partition, committed, ends[tp],
                                        lag, None))
                if lag:
                    waiting[(group, tp)] = first
        stamps = self._oldest(waiting) if waiting else {}
        for i, row in enumerate(out):
            stamp = stamps.get((row.group, TopicPartition(row.topic, row.partition)))
            if stamp is not None:
                out[i] = replace(row, time_lag=max(0.0, now.timestamp() - stamp))
        return out

    def _oldest(self, waiting: dict[tuple[str, TopicPartition], int],
                timeout: float = 5.0) -> dict[tuple[str, TopicPartition], float]:
        """Timestamp (seconds) of the record at each waiting position."""
        found: dict[tuple[str, TopicPartition], float] = {}
        reader = kafkaclients.consumer(self.settings, enable_auto_commit=False)
        try:
            for (group, tp), offset in waiting.items():
                reader.assign([tp])
                reader.seek(tp, offset)
                for msgs in reader.poll(timeout_ms=int(timeout * 1000), max_records=1).values():
                    if msgs:
                        found[(group, tp)] = msgs[0].timestamp / 1000
        finally:
            reader.close()
        return found

    def close(self) -> None:
        self.probe.close()
        for c in self._group_clients.values():
            c.close()


def over(rows: list[PartitionLag], *, max_lag: int | None,
         max_time_lag: float | None) -> list[PartitionLag]:
    """The partitions beyond either threshold."""
    return [r for r in rows
            if (max_lag is not None and r.lag > max_lag)
            or (max_time_lag is not None and (r.time_lag or 0.0) > max_time_lag)]


def render(rows: list[PartitionLag], color: Callable[[str, bool], str] | None = None) -> str:
    """A table, one line per partition and a total per group."""
    paint = color or (lambda text, _bad: text)
    head = f"{'GROUP':<34} {'TOPIC':<30} {'PART':>4} {'COMMITTED':>10} {'END':>10} " \
           f"{'LAG':>8} {'TIME-LAG':>9}"
    lines = [head]
    for group in dict.fromkeys(r.group for r in rows):
        mine = [r for r in rows if r.group == group]
        for r in mine:
            lines.append(paint(
                f"{r.group:<34} {r.topic:<30} {r.partition:>4} "
                f"{'-' if r.committed is None else r.committed:>10} {r.end:>10} {r.lag:>8} "
                f"{_age(r.time_lag):>9}", r.lag > 0))
        total = sum(r.lag for r in mine)
        oldest = max((r.time_lag for r in mine if r.time_lag is not None), default=None)
        lines.append(paint(f"{'':<34} {'total':<30} {'':>4} {'':>10} {'':>10} {total:>8} "
                           f"{_age(oldest):>9}", total > 0))
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"
