"""Batches that close when the stream runs dry: the worker's own ``take_events``.

Faust's ``Stream.take_events(max, within)`` hands out a batch when it holds ``max`` events
or when ``within`` seconds have passed since the previous batch was handed out. Under a
steady load that wait is part of every event's latency, whatever the load: with a 50 ms
window an event waits 25 ms on average before its batch is even looked at. A shorter
window makes a backlog drain slower, because a backlog's batch then closes before it is
full (Faust's per-message path fills it at ~60 µs a record).

Here a batch closes at whichever comes first:

- it holds ``max_`` events;
- nothing more is waiting in the stream's channel, i.e. the worker has taken everything
  delivered to it so far (Faust hands a fetch's records to the channel one at a time,
  yielding to the loop between them, so under a light load a batch may end inside a
  fetch; under a backlog the channel stays full while a batch is handled);
- ``within`` seconds have passed since its first event (a bound for a trickle that keeps
  the channel non-empty without filling the batch).

So the batch size follows the load by itself: idle, an event is handled as soon as it
arrives; busy, events pile up in the channel while a batch is handled and the next batch
takes them all, up to ``max_``; under a backlog every batch is full. While a batch is
handled nothing is added to the next one (the processor waits), so no event is taken
from the channel before there is room for it. A batch's events are acked only once the
handler is done with them: unlike Faust's ``take_events``, which acks in a ``finally``,
a batch the handler never finished is not acked. Nor is a batch the handler emptied
(``batch.clear()``): it gives the batch up (the worker does so when it may no longer own
its partitions, runtime/lease.py), and the records are read again from the committed
offsets after the rebalance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from faust.types import EventT, StreamT

__all__ = ["take_batches"]


def _waiting(stream: StreamT[Any]) -> Callable[[], int]:
    """How many records wait in the stream's channel. A stream over a plain async
    iterable has no queue: it never looks dry, so its batches close by ``max_`` or
    ``within``."""
    queue = getattr(stream.channel, "queue", None)
    if queue is None:
        return lambda: 1
    return lambda: cast(int, queue.qsize())


async def take_batches(stream: StreamT[Any], max_: int,
                       within: float) -> AsyncIterator[list[EventT[Any]]]:
    """Batches of the stream's events, closed by ``max_``, by the channel running dry,
    or ``within`` seconds after their first event (module docstring)."""
    s = cast(Any, stream)  # Faust's concrete Stream: processors, passive drain, acks
    loop = asyncio.get_running_loop()
    events: list[EventT[Any]] = []
    ready = asyncio.Event()      # the batch is to be handed out
    room = asyncio.Event()       # the previous batch is done: the processor may go on
    room.set()
    deadline: asyncio.TimerHandle | None = None
    waiting = _waiting(stream)

    async def add(value: Any) -> Any:
        nonlocal deadline
        if not room.is_set():
            await room.wait()
        event = s.current_event
        if event is None:
            raise RuntimeError("a batched stream found no current event")
        events.append(event)
        if len(events) == 1:
            deadline = loop.call_later(within, ready.set)
        if len(events) >= max_ or not waiting():
            ready.set()
            room.clear()  # not one event more until this batch is handed out and done
        return value

    enable_acks = s.enable_acks
    s.enable_acks = False  # acked here, after the handler is done with each batch
    s.add_processor(add)
    s._enable_passive(aiter(s.channel))
    try:
        while not s.should_stop:
            await s.wait_for_stopped(ready, timeout=1.0)
            if not ready.is_set():
                continue  # woken by the timeout (or a stop): the batch is not due yet
            if not events:
                ready.clear()
                continue
            room.clear()
            if deadline is not None:
                deadline.cancel()
                deadline = None
            batch = list(events)
            events.clear()
            yield batch
            # Resumed: the handler is done with the batch (or emptied it: given up). A
            # batch it never finished (the agent cancelled by a stop, an error) ends the
            # generator at the yield instead and is not acked, so its offsets are not
            # committed.
            for event in batch:
                await s.ack(event)
            ready.clear()
            room.set()
    finally:
        s.enable_acks = enable_acks
        s._processors.remove(add)
