"""The state table as the worker reads and writes it: Faust's table data (restored from
the changelog on assignment) holds each customer's encoded state and each partition's
event-clock time; decoded states are kept in an LRU cache, the table staying the truth
(a state loaded leaves the cache until its evaluation's result is put back).
Writing to the changelog is the worker's (``Worker.store``): this only mirrors what was
acked."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from datetime import datetime

import structlog

from omnijourney.codecs import (
    NOTHING_DUE,
    NOTHING_DUE_LENGTH,
    decode_state,
    decode_watermark,
    is_watermark_key,
    state_due,
    watermark_key,
)
from omnijourney.core import CustomerState
from omnijourney.core.redaction import brief

log = structlog.get_logger("omnijourney.worker")
STATE_CACHE = 200_000  # decoded states kept in memory


class StateStore:
    def __init__(self, data: Callable[[], MutableMapping[bytes, bytes]],
                 cache_size: int = STATE_CACHE) -> None:
        self._data = data  # Faust's table data, made when the table first needs it
        self.cache: OrderedDict[str, CustomerState] = OrderedDict()
        self.cache_size = cache_size

    def load(self, cid: str) -> CustomerState | None:
        """The customer's state, handed over (``unshared``) to the one evaluation it is
        loaded for, which changes it in place instead of on a copy: taken out of the
        cache (or decoded), it is kept again only as that evaluation's stored result
        (``put``). An evaluation that fails half-way or changes nothing leaves the cache
        without it, and the next load reads the table, which is the truth."""
        st = self.cache.pop(cid, None)
        if st is None:
            raw = self._data().get(cid.encode())
            if raw is None:
                return None
            _, st = decode_state(raw)
        st.hand_over()
        return st

    def warm(self, cids: list[str], limit: int | None = None) -> int:
        """Decode ahead the states of ``cids`` (customers soon due) into the cache, until
        it holds ``limit`` states (at most its size): their ticks then find them
        decoded. Only what the table holds now is decoded, as ``load`` would decode it;
        a state written later replaces it (``put``), an erasure drops it, and ``waiting``
        (a new assignment) clears it. Never evicts; passes over states already cached.
        Returns how many were decoded; a value that does not read is left for its tick to
        find, as it would be."""
        data = self._data()
        cache = self.cache
        full = self.cache_size if limit is None else min(limit, self.cache_size)
        warmed = 0
        for cid in cids:
            if len(cache) >= full:
                break
            if cid in cache:
                continue
            raw = data.get(cid.encode())
            if raw is None:
                continue
            try:
                _, st = decode_state(raw)
            except Exception:
                continue
            cache[cid] = st
            warmed += 1
        return warmed

    def put(self, cid: str, st: CustomerState, doc: bytes) -> None:
        self._data()[cid.encode()] = doc
        self._remember(cid, st)

    def drop(self, cid: str) -> None:
        """Erased: nothing of the customer left in memory."""
        self._data().pop(cid.encode(), None)
        self.cache.pop(cid, None)

    def watermark(self, partition: int) -> datetime | None:
        """The partition's event-clock time as its last owner stored it (``event`` clock)."""
        raw = self._data().get(watermark_key(partition))
        if raw is None:
            return None
        try:
            return decode_watermark(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("unreadable_watermark", partition=partition,
                      error=brief(exc))
            return None

    def put_watermark(self, partition: int, doc: bytes) -> None:
        self._data()[watermark_key(partition)] = doc

    def waiting(self, owned: frozenset[int]) -> Iterator[tuple[str, int, datetime]]:
        """(customer, partition, next due time) of every waiting customer on ``owned``, read
        from the head of each value without decoding the state (a value whose head says
        it waits for nothing is passed over at a glance); the cache is emptied first
        (states of partitions that moved may be stale). A value that does not read is
        counted and logged, never fatal."""
        self.cache.clear()
        unreadable = 0
        for key, raw in self._data().items():
            if raw[:NOTHING_DUE_LENGTH] in NOTHING_DUE:
                continue
            if is_watermark_key(key):
                continue
            try:
                partition, due = state_due(raw)
            except Exception:
                unreadable += 1
                continue
            if due is not None and partition in owned:
                yield key.decode(), partition, due
        if unreadable:
            log.error("unreadable_states", count=unreadable)

    def _remember(self, cid: str, st: CustomerState) -> None:
        self.cache[cid] = st
        self.cache.move_to_end(cid)
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
