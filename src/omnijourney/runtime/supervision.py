"""Watching a worker from outside its agent: stalls Faust cannot get out of alone, the
exit statuses that hand the worker to its supervisor, and a flow dump for the cases
nothing logs.

Beside ``faustguard`` (the guards in front of Faust's record handover): both exist
because of what the fault tests found; the README's "Fault tests" tells each story.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import faust
import structlog
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError
from faust.exceptions import ProducerSendError
from faust.tables.manager import TableManager

if TYPE_CHECKING:
    from omnijourney.runtime.app import Worker

log = structlog.get_logger("omnijourney.worker")

# Exit status of a worker that stopped itself because its table restore stalled: its
# supervisor (compose, Kubernetes, systemd) starts it again, which restores afresh.
EXIT_STALLED = 75  # EX_TEMPFAIL

# Exit status of a worker whose agent failed (Kafka unusable, a bug outside any one
# record): unhealthy at once, then a graceful stop, for its supervisor to start it again.
EXIT_FAILED = 70  # EX_SOFTWARE


# Kafka errors that are one record's doing (its size); any other Kafka error is the
# cluster's, and retrying the batch after a restart is the cure.
RECORD_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError)


def cluster_error(exc: BaseException) -> bool:
    """A Kafka error that is the cluster's, not one record's (see RECORD_ERRORS)."""
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 8:
        chain.append(exc)
        exc = exc.__cause__  # type: ignore[assignment]  # None ends the loop
    if any(isinstance(x, RECORD_ERRORS) for x in chain):
        return False
    return any(isinstance(x, KafkaError | ProducerSendError) for x in chain)


class Supervisor(faust.Service):
    """Started with the app (Faust starts its own timers only after the first table
    restore, too late to watch that one); every second it checks the restore and the
    rebalance of its worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.rebalance_since: float | None = None
        super().__init__()

    @faust.Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            self.watch_restore()
            self.watch_rebalance(time.monotonic())
            await self.sleep(1.0)

    def watch_restore(self) -> None:
        """Stop the worker when its table restore makes no progress for
        ``recovery_stall`` seconds. Faust waits forever there ("No event received for
        active tp ..."); a fresh start restores from the changelog and goes on."""
        recovery = cast(TableManager, self.worker.app.tables).recovery
        remaining = recovery.active_remaining_total() if self.worker.app.in_recovery else None
        self.worker.metrics.restoring.set(remaining or 0)
        now = time.monotonic()
        stalled = self.worker.restore.observe(remaining, now)
        if remaining is not None and not stalled:
            self.worker.alive.beat()  # restoring, not stuck: a long restore is no reason to kill
        if not stalled or self.worker.stalled:
            return
        self.worker.stalled = True
        log.error("recovery_stalled", seconds=round(self.worker.restore.stuck_for(now), 1),
                  remaining=remaining, exit_status=EXIT_STALLED)
        os.kill(os.getpid(), signal.SIGTERM)  # a graceful stop: leave the group, close

    def watch_rebalance(self, now: float) -> None:
        """Stop the worker when a rebalance outlasts any the group can need (every member
        joins within max.poll.interval, then the assignment is a round trip). The stall
        this catches: a worker out of its group is never let back in, because Faust polls
        only once the rebalance is over, and aiokafka rejoins only after a poll (see
        the README, "An unexplained loss"). Unhealthy at once; a fresh start rejoins."""
        rebalancing = self.worker.app.rebalancing and not self.worker.app.in_recovery
        self.rebalance_since = (self.rebalance_since or now) if rebalancing else None
        if self.rebalance_since is None or self.worker.stalled:
            return
        stuck = now - self.rebalance_since
        settings = self.worker.settings
        if stuck < settings.max_poll_interval + settings.session_timeout + 30:
            return
        self.worker.stalled = True
        self.worker.alive.fail("rebalance stalled")
        log.error("rebalance_stalled", seconds=round(stuck, 1),
                  generation=self.worker.app.consumer_generation_id, exit_status=EXIT_STALLED)
        os.kill(os.getpid(), signal.SIGTERM)
        # Faust's graceful stop waits for records it will never get back: exit anyway.
        threading.Timer(15.0, os._exit, (EXIT_STALLED,)).start()

    def dump_flow(self, *_: object) -> None:
        """SIGUSR2: where the flow of records stands (mode's own SIGUSR1 prints every
        task's stack): Faust's active, paused and buffer-full partitions, aiokafka's
        paused ones, flow control, and the stream queue; for a worker that stopped
        moving without an error."""
        consumer: Any = self.worker.app.consumer

        def names(tps: Any) -> list[str]:
            return sorted(f"{tp.topic.rsplit('-', 1)[-1]}:{tp.partition}" for tp in tps or ())

        try:
            inner = consumer._thread._ensure_consumer()  # aiokafka's own consumer
            queue = cast(Any, self.worker.source).queue
            log.warning("flow", active=names(consumer._active_partitions),
                        paused=names(consumer._paused_partitions),
                        buffer_full=names(consumer._buffered_partitions),
                        client_paused=names(inner.paused()),
                        assigned=names(inner.assignment()), flow_active=consumer.flow_active,
                        app_flow=self.worker.app.flow_control.is_active(),
                        queue=queue.qsize(),
                        pressure_callbacks=len(queue._pending_pressure_drop_callbacks),
                        generation=self.worker.app.consumer_generation_id,
                        in_recovery=self.worker.app.in_recovery,
                        rebalancing=self.worker.app.rebalancing)
        except Exception as exc:
            log.warning("flow", error=repr(exc))
