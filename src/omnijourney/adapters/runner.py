"""The adapter runner: consume one channel's commands, deliver each once, report back.

Per command: drop a command_id already delivered; report a command past its deadline as
``expired`` instead of sending it late; deliver with bounded retries (exponential backoff
with jitter) on transient errors; record the id as delivered (acked by the broker); publish
a DeliveryReport to ``deliveries``; offsets are committed after each batch.

The delivered ids live in a compacted Kafka topic (``omnijourney-delivered.<channel>``,
keyed by command_id) read in full at start, so idempotency survives restarts and needs no
local disk. The one window left is a crash between the provider accepting a message and
that record being acked. Providers with idempotency keys (set from command_id) close it.
Channels without them (SMTP) first record the command as ``attempting``: after a crash
in that window the adapter knows the command is *unconfirmed* and applies the operator's
choice, ``ADAPTER_UNCONFIRMED=resend`` (default: at least once; the repeat carries the
same Message-ID, which receivers use to recognise it) or ``skip`` (at most once: report
it as failed with the reason instead of risking a second copy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from datetime import datetime
from functools import partial
from typing import Any

import structlog

from omnijourney import kafkaclients, wallclock
from omnijourney.adapters.delivered import ATTEMPTING, DeliveredLog
from omnijourney.adapters.flow import KeyedPool, Offsets
from omnijourney.adapters.protocols import (
    BatchChannel,
    Channel,
    Outcome,
    TransientError,
    Unconfirmed,
)
from omnijourney.adapters.retry import RetryPolicy
from omnijourney.codecs import CodecError, decode_command, encode_dead_letter, encode_delivery
from omnijourney.core.commands import ChannelCommand, DeliveryReport
from omnijourney.core.profile import address_digest
from omnijourney.core.redaction import brief, digest, scrub
from omnijourney.kafkaclients import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    KafkaError,
    MemberState,
    OffsetAndMetadata,
    TopicPartition,
)
from omnijourney.ops.metrics import AdapterMetrics, Heartbeat, start_ops
from omnijourney.settings import ClockMode, Settings, adapter_group

log = structlog.get_logger("omnijourney.adapter")

UNCONFIRMED_POLICIES = ("resend", "skip")


def _joined(consumer: KafkaConsumer) -> bool:
    """A member of the group's current generation (with or without partitions)."""
    coordinator = getattr(consumer, "_coordinator", None)
    state = getattr(coordinator, "state", None)
    if state is None:
        raise RuntimeError("kafka-python changed: KafkaConsumer._coordinator.state is gone; "
                           "omnijourney.adapters.runner._joined needs a look")
    return bool(state is MemberState.STABLE)


def transient(exc: BaseException) -> bool:
    """A Kafka client error that passes with the cluster's trouble (a broker gone, a
    coordinator moving: kafka-python marks those ``retriable``): retried. Anything else
    is raised."""
    return bool(getattr(exc, "retriable", False))


class Runner:
    def __init__(self, settings: Settings, channel: Channel, *,
                 retry: RetryPolicy | None = None,
                 now: Callable[[], datetime] | None = None, unconfirmed: str = "resend",
                 concurrency: int = 8, max_in_flight: int = 1000) -> None:
        if unconfirmed not in UNCONFIRMED_POLICIES:
            raise ValueError(f"unconfirmed must be one of {UNCONFIRMED_POLICIES}")
        self.settings = settings
        self.channel = channel
        # Providers that drop a repeated idempotency key need no write-ahead record.
        self.write_ahead = not getattr(channel, "provider_dedupes", True)
        self.unconfirmed = unconfirmed
        self.retry = retry or RetryPolicy()
        self.now = now or wallclock.now
        # Customers delivered at once (each customer's commands stay in order), and the
        # most commands read ahead of the oldest one still in flight.
        self.concurrency, self.max_in_flight = max(1, concurrency), max(1, max_in_flight)
        self.delivered = DeliveredLog(settings, channel.name, self.now)
        self.reports = kafkaclients.producer(settings, acks="all")
        self.counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()
        self.metrics = AdapterMetrics(channel.name)
        # The poll loop turns every poll timeout, and every retry beats too.
        self.alive = Heartbeat(within=120.0)
        self.consuming = False  # the delivered log is loaded and the poll loop runs
        # Out of the group this long (a standby member owning nothing is in it): start over.
        self.rejoin_after = max(30.0, 3 * settings.session_timeout)

    @property
    def group(self) -> str:
        return adapter_group(self.settings, self.channel.name)

    def ready(self) -> bool:
        # A standby adapter (more adapters than partitions) is ready too: it owns nothing
        # until a rebalance gives it partitions.
        return self.consuming and self.alive()

    def _retried(self) -> None:
        self.alive.beat()
        self.metrics.retries.labels(self.channel.name).inc()

    def start_ops(self, port: int | None) -> None:
        """/metrics, /healthz, /readyz on ``port`` and a consumer-lag probe."""
        start_ops(self.metrics, self.settings, self.group, port, healthy=self.alive,
                  ready=self.ready, what=f"adapter {self.channel.name}",
                  host=self.settings.metrics_host, token=self.settings.metrics_token)

    def run(self, *, idle_exit: float | None = None) -> dict[str, int]:
        """Consume until stopped (or ``idle_exit`` seconds without a command)."""
        known = self.delivered.load()
        log.info("adapter_started", channel=self.channel.name, group=self.group,
                 settled_ids=known, concurrency=self.concurrency)
        offsets = Offsets()
        pool = KeyedPool(self.concurrency, name=f"{self.channel.name}-deliver")
        consumer = self._consumer(offsets)
        last = joined_at = calm = time.monotonic()
        patience = self.settings.cluster_patience
        owned: set[int] | None = None
        try:
            while idle_exit is None or time.monotonic() - last < idle_exit:
                if pool.error is not None:
                    raise pool.error  # the cluster failed a report: restart, repeat safely
                full = offsets.in_flight() >= self.max_in_flight
                if full:  # keep the membership (poll), read nothing more for now
                    consumer.pause(*consumer.assignment())
                else:
                    consumer.resume(*consumer.paused())
                try:
                    batch = consumer.poll(timeout_ms=100 if full or offsets.in_flight() else 500)
                except KafkaError as exc:
                    if not transient(exc) or time.monotonic() - calm > patience:
                        raise  # not the cluster's passing trouble: exit, for a restart
                    # A broker gone (killed, restarting): kafka-python 3.0 raises its
                    # connection error out of poll. The consumer looks the group
                    # coordinator up again on the next poll; nothing was fetched.
                    log.warning("consumer_retry", channel=self.channel.name,
                                error=brief(exc),
                                waited=round(time.monotonic() - calm, 1))
                    time.sleep(0.5)
                    continue
                calm = time.monotonic()
                self.alive.beat()
                self.consuming = True
                if _joined(consumer):
                    joined_at = time.monotonic()
                elif time.monotonic() - joined_at > self.rejoin_after:
                    # kafka-python 3.0 can wait for its group coordinator forever without a
                    # word (seen once in three runs of the worker-chaos fault test: the
                    # group stayed Empty, the adapter delivered nothing). A new consumer
                    # looks the coordinator up afresh; nothing was fetched, nothing is lost.
                    log.warning("consumer_rejoin", channel=self.channel.name,
                                seconds=round(time.monotonic() - joined_at, 1))
                    self._drain(offsets, set(consumer.assignment()), consumer)
                    consumer.close()
                    consumer, joined_at = self._consumer(offsets), time.monotonic()
                    continue
                now_owned = {tp.partition for tp in consumer.assignment()}
                if now_owned != owned:  # an operator's first question: does it own any?
                    owned = now_owned
                    log.info("assigned", channel=self.channel.name, partitions=sorted(owned))
                records = [(tp, m) for tp, msgs in batch.items() for m in msgs]
                # Idle means owning partitions with nothing in them and nothing in flight:
                # waiting in a rebalance (a killed predecessor's session has yet to
                # expire) is not.
                if records or offsets.in_flight() or not consumer.assignment():
                    last = time.monotonic()
                self._dispatch(records, offsets, pool)
                self._commit(consumer, offsets)
            self._drain(offsets, set(consumer.assignment()), consumer)
        finally:
            pool.shutdown()
            consumer.close()
            self.reports.flush()
        if pool.error is not None:
            raise pool.error
        return self.counts

    def _dispatch(self, records: list[tuple[TopicPartition, Any]], offsets: Offsets,
                  pool: KeyedPool) -> None:
        """A batch channel delivers the records at once; any other hands each to the pool
        (per customer in order, customers side by side)."""
        if isinstance(self.channel, BatchChannel) and records:
            self.handle_batch([m.value for _, m in records])
            for tp, m in records:
                offsets.add(tp, m.offset)
                offsets.done(tp, m.offset)
            return
        for tp, m in records:
            offsets.add(tp, m.offset)
            pool.submit(m.key or b"", partial(self._deliver_one, tp, m.offset, m.value,
                                              offsets))

    def _deliver_one(self, tp: TopicPartition, offset: int, raw: bytes,
                     offsets: Offsets) -> None:
        self.handle(raw, partition=tp.partition, offset=offset)
        offsets.done(tp, offset)  # only once reported: a crash before repeats it

    def _commit(self, consumer: KafkaConsumer, offsets: Offsets) -> None:
        points = {tp: p for tp, p in offsets.committable().items()
                  if tp in consumer.assignment()}
        if points:
            try:
                consumer.commit({tp: OffsetAndMetadata(p, "", -1) for tp, p in points.items()})
            except KafkaError as exc:
                if not transient(exc):
                    raise
                # Committed at the next try; a crash before repeats what the delivered
                # log then drops.
                log.warning("commit_retry", channel=self.channel.name,
                            error=brief(exc))
                return
            offsets.mark_committed(points)

    def _drain(self, offsets: Offsets, tps: set[TopicPartition],
               consumer: KafkaConsumer | None) -> None:
        """Let what is in flight for ``tps`` finish (bounded), commit it, forget them."""
        if not offsets.wait_done(tps, timeout=max(60.0, self.retry.max_delay * 2)):
            log.warning("revoked_in_flight", channel=self.channel.name,
                        commands=offsets.in_flight(tps))
        if consumer is not None:
            try:
                self._commit(consumer, offsets)
            except Exception as exc:
                log.warning("commit_failed", channel=self.channel.name, error=str(exc))
        offsets.forget(tps)

    def _consumer(self, offsets: Offsets) -> KafkaConsumer:
        consumer = kafkaclients.consumer(
            self.settings, group_id=self.group,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=100,
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(self.settings.session_timeout * 1000 / 3),
            max_poll_interval_ms=int(self.settings.max_poll_interval * 1000))
        runner = self

        # kafka-python ships no annotations: its listener base is Any to mypy.
        class Handover(ConsumerRebalanceListener):  # type: ignore[misc]
            """Partitions going elsewhere: finish their commands in flight first, so
            their next owner starts after them rather than sending them again."""

            def on_partitions_revoked(self, revoked: Any) -> None:
                runner._drain(offsets, set(revoked), consumer)

            def on_partitions_assigned(self, assigned: Any) -> None:
                pass

        consumer.subscribe([self.settings.topics.command(self.channel.name)],
                           listener=Handover())
        return consumer

    def _screen(self, cmd: ChannelCommand, seen: AbstractSet[str] = frozenset()) -> str | None:
        """Settle a command that must not be delivered; None when it should be."""
        if cmd.command_id in self.delivered or cmd.command_id in seen:
            return self._count("duplicate")
        if self.settings.clock == ClockMode.WALL and self.now() > cmd.deadline:
            # Late is worse than never for most messages (a "still in your cart" mail a
            # week on); the engine learns of it through the report.
            return self._finish(cmd, Outcome("expired", reason="past deadline"))
        if self.delivered.unconfirmed(cmd.command_id):
            log.warning("unconfirmed", command_id=cmd.command_id, policy=self.unconfirmed,
                        customer_id=cmd.customer_id, journey=cmd.journey)
            self._count(f"unconfirmed_{self.unconfirmed}")
            if self.unconfirmed == "skip":
                return self._finish(cmd, Outcome(
                    "failed", reason="unconfirmed: the adapter stopped mid-send; not resent "
                                     "(ADAPTER_UNCONFIRMED=skip)"))
        return None

    def handle(self, raw: bytes, *, partition: int = -1, offset: int = -1) -> str:
        """One command, whatever it holds: a record that does not decode goes to the
        dead-letter topic, a command that fails in any way is reported ``failed`` with
        the reason; neither ever stops the adapter."""
        try:
            cmd = decode_command(raw)
        except CodecError as exc:
            return self._undecodable(raw, str(exc), partition, offset)
        settled = self._screen(cmd)
        if settled is not None:
            return settled
        if self.write_ahead:
            self.delivered.record(cmd.command_id, ATTEMPTING)
        started = time.perf_counter()
        try:
            attempts = _Attempts(self.channel, self.unconfirmed)
            outcome = self.retry.run(
                lambda: attempts.deliver(cmd), deadline=self._deadline([cmd]),
                what=cmd.command_id, now=self.now, on_retry=self._retried)
        except Exception as exc:
            outcome = Outcome("failed", reason=scrub(
                f"{type(exc).__name__} while delivering: {str(exc)[:200]}"))
        self.metrics.latency.labels(self.channel.name).observe(time.perf_counter() - started)
        return self._finish(cmd, outcome)

    def _undecodable(self, raw: bytes, why: str, partition: int, offset: int) -> str:
        topic = self.settings.topics.command(self.channel.name)
        self.reports.send(self.settings.topics.dlq, value=encode_dead_letter(
            raw, key=None, topic=topic, partition=partition, offset=offset,
            error=f"undecodable command: {why}", at=self.now())).get(30)
        log.error("dead_letter", channel=self.channel.name, reason=why, offset=offset)
        return self._count("undecodable")

    def handle_batch(self, raws: list[bytes]) -> None:
        """Batch channels: one provider call for everything still to deliver."""
        assert isinstance(self.channel, BatchChannel)
        todo: list[ChannelCommand] = []
        seen: set[str] = set()
        for raw in raws:
            try:
                cmd = decode_command(raw)
            except CodecError as exc:
                self._undecodable(raw, str(exc), -1, -1)
                continue
            if self._screen(cmd, seen) is None:
                todo.append(cmd)
                seen.add(cmd.command_id)
        if not todo:
            return
        channel = self.channel
        started = time.perf_counter()
        try:
            result = self.retry.run(lambda: channel.deliver_batch(todo),
                                    deadline=self._deadline(todo),
                                    what=f"{len(todo)} {channel.name} commands",
                                    now=self.now, on_retry=self._retried)
        except Exception as exc:
            result = Outcome("failed", reason=brief(exc))
        self.metrics.latency.labels(channel.name).observe(
            (time.perf_counter() - started) / len(todo))
        for cmd in todo:
            outcome = result if isinstance(result, Outcome) else result.get(
                cmd.command_id, Outcome("failed", reason="the provider did not answer for it"))
            self._finish(cmd, outcome)

    def _finish(self, cmd: ChannelCommand, outcome: Outcome) -> str:
        if outcome.status in ("sent", "expired", "failed", "bounced"):
            self.delivered.record(cmd.command_id, outcome.status)
        reason = scrub(outcome.reason)
        to = cmd.to
        self.reports.send(self.settings.topics.deliveries, key=cmd.customer_id.encode(),
                          value=encode_delivery(DeliveryReport(
                              cmd.command_id, cmd.customer_id, cmd.channel, outcome.status,
                              self._report_time(cmd), provider_id=outcome.provider_id,
                              reason=reason, journey=cmd.journey,
                              instance_key=cmd.instance_key or None,
                              # Which address bounced, as the digest the profile keeps.
                              address_digest=address_digest(to) if to else None)))
        log.info("delivery", command_id=cmd.command_id, customer_id=cmd.customer_id,
                 journey=cmd.journey, step=cmd.step, status=outcome.status,
                 to=digest(to) if to else None, reason=reason)
        return self._count(outcome.status)

    def _deadline(self, commands: list[ChannelCommand]) -> datetime | None:
        """No retry past the earliest deadline; in a replay (event clock) none applies."""
        return min(c.deadline for c in commands) if self.settings.clock == ClockMode.WALL else None

    def _report_time(self, cmd: ChannelCommand) -> datetime:
        """When the outcome happened. In a replay (event clock) that is the command's own
        moment: the worker's clock follows the times of what it reads, ``deliveries`` too,
        so a report stamped with today's wall time would move a replay of March to today
        and fire every wait still pending in it at once."""
        return self.now() if self.settings.clock == ClockMode.WALL else cmd.send_at

    def _count(self, status: str) -> str:
        with self._counts_lock:
            self.counts[status] = self.counts.get(status, 0) + 1
        self.metrics.outcome(status)
        return status

    def close(self) -> None:
        self.delivered.close()
        self.reports.close()


class _Attempts:
    """The channel, as the retry loop sees it: an ``Unconfirmed`` attempt is retried once
    under ``resend`` (the repeat carries the same Message-ID) and reported failed under
    ``skip``, or when the resend is unconfirmed too."""

    def __init__(self, channel: Channel, policy: str) -> None:
        self.channel, self.policy = channel, policy
        self.name = channel.name
        self.unconfirmed = 0

    def deliver(self, cmd: ChannelCommand) -> Outcome:
        try:
            return self.channel.deliver(cmd)
        except Unconfirmed as exc:
            self.unconfirmed += 1
            if self.policy == "resend" and self.unconfirmed == 1:
                raise TransientError(f"unconfirmed, resending once: {exc}") from None
            return Outcome("failed", reason=f"unconfirmed: {exc}; not resent "
                                            f"(ADAPTER_UNCONFIRMED={self.policy})")
