"""The worker's batching (runtime/batching.py) on Faust's own streams (an agent's test
context: Faust's Stream, channel queue, events and acks, without a broker): a batch closes
when the channel runs dry, when full, or ``within`` after its first event; events keep
their order; a batch is acked once handled and never before, not even when cut short."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest

from omnijourney.runtime.batching import take_batches

_apps = itertools.count()


class Rig:
    """An agent that batches its stream and holds each batch while ``done`` is clear."""

    def __init__(self, max_: int, within: float) -> None:
        self.app = faust.App(f"batching-{next(_apps)}", broker="kafka://127.0.0.1:1",
                             store="memory://")
        self.batches: list[list[Any]] = []   # events, as handed out
        self.handed: list[float] = []        # when each was handed out (loop time)
        self.done = asyncio.Event()
        self.done.set()

        async def agent(stream: faust.StreamT[Any]) -> AsyncIterator[int]:
            async for batch in take_batches(stream, max_, within):
                self.batches.append(batch)
                self.handed.append(asyncio.get_running_loop().time())
                await self.done.wait()
                yield len(batch)

        self.agent = self.app.agent(self.app.topic(f"t{next(_apps)}"))(agent)

    def close(self) -> None:
        """The stream made the app's consumer, whose thread (never started here) made an
        event loop of its own: closed, or it is reported unclosed."""
        self.app.consumer._thread.thread_loop.close()

    def values(self) -> list[list[int]]:
        return [[e.value for e in b] for b in self.batches]

    @staticmethod
    def acked(batch: list[Any]) -> list[bool]:
        return [e.message.acked for e in batch]


async def settle() -> None:
    await asyncio.sleep(0.05)


def test_a_lone_event_is_handed_out_at_once_not_after_the_window() -> None:
    async def go() -> None:
        rig = Rig(max_=500, within=30.0)
        async with rig.agent.test_context() as ctx:
            sent = asyncio.get_running_loop().time()
            await ctx.put(1, wait=False)
            await settle()
            assert rig.values() == [[1]]
            assert rig.handed[0] - sent < 1.0  # not the 30 s window
            await ctx.put(2, wait=False)
            await settle()
            assert rig.values() == [[1], [2]]
        rig.close()

    asyncio.run(go())


def test_what_piles_up_while_a_batch_is_handled_comes_out_in_full_batches_in_order() -> None:
    async def go() -> None:
        rig = Rig(max_=5, within=30.0)
        async with rig.agent.test_context() as ctx:
            rig.done.clear()                     # the handler is busy with batch 1
            await ctx.put(0, wait=False)
            await settle()
            for i in range(1, 13):
                await ctx.put(i, wait=False)
            await settle()
            assert rig.values() == [[0]]         # nothing taken while batch 1 is handled
            assert rig.acked(rig.batches[0]) == [False]
            rig.done.set()
            await settle()
            assert rig.values() == [[0], [1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]
            assert all(all(rig.acked(b)) for b in rig.batches[:-1])
        rig.close()

    asyncio.run(go())


def test_a_batch_is_acked_only_after_it_is_handled_and_not_when_cut_short() -> None:
    async def go() -> None:
        rig = Rig(max_=10, within=30.0)
        async with rig.agent.test_context() as ctx:
            await ctx.put(1, wait=False)
            await settle()
            rig.done.clear()
            await ctx.put(2, wait=False)
            await settle()
            first, second = rig.batches
            assert rig.acked(first) == [True]    # handled: the handler asked for more
            assert rig.acked(second) == [False]  # being handled
        # The agent stopped while it held the second batch: never acked, so its offset is
        # never committed and a restart reads it again.
        assert rig.acked(second) == [False]
        rig.close()

    asyncio.run(go())


def test_a_batch_the_handler_empties_is_given_up_unacked_and_the_next_ones_go_on() -> None:
    """What the worker does with a batch it may not write (runtime/lease.py)."""
    async def go() -> None:
        app = faust.App(f"batching-{next(_apps)}", broker="kafka://127.0.0.1:1",
                        store="memory://")
        seen: list[list[Any]] = []

        async def agent(stream: faust.StreamT[Any]) -> AsyncIterator[int]:
            async for batch in take_batches(stream, 10, 30.0):
                seen.append(list(batch))
                if batch[0].value == 1:
                    batch.clear()
                yield len(seen)

        handler = app.agent(app.topic(f"t{next(_apps)}"))(agent)
        async with handler.test_context() as ctx:
            await ctx.put(1, wait=False)
            await settle()
            await ctx.put(2, wait=False)
            await settle()
            await ctx.put(3, wait=False)
            await settle()
        assert [[e.value for e in b] for b in seen] == [[1], [2], [3]]
        assert [Rig.acked(b) for b in seen[:2]] == [[False], [True]]
        app.consumer._thread.thread_loop.close()

    asyncio.run(go())


def test_a_trickle_that_keeps_the_channel_busy_is_bounded_by_the_window(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        rig = Rig(max_=500, within=0.2)
        async with rig.agent.test_context() as ctx:
            stream = ctx._stream  # the stream the agent iterates
            # The channel never looks dry, as under a trickle that keeps one record queued.
            monkeypatch.setattr(stream.channel.queue, "qsize", lambda: 1)
            sent = asyncio.get_running_loop().time()
            await ctx.put(1, wait=False)
            await ctx.put(2, wait=False)
            await settle()
            assert rig.values() == []            # open: neither full nor dry
            await asyncio.sleep(0.4)
            assert rig.values() == [[1, 2]]
            assert 0.2 <= rig.handed[0] - sent < 1.0
        rig.close()

    asyncio.run(go())
