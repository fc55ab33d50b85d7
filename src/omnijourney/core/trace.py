"""The trace: one entry per decision the evaluator makes, in words a marketer can read.

``TraceKind`` names every kind there is; analytics, the simulator's explanations, the
metrics and the worker's log read them, so a new kind is added here or nowhere. It is a
``StrEnum``: an entry's kind is also its text on the wire and in logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from omnijourney.core.timeutil import format_instant


class TraceKind(StrEnum):
    # an event or tick arrives
    DUPLICATE_EVENT = "duplicate_event"  # seen before, same content: nothing happens
    EVENT_CONFLICT = "event_conflict"  # seen before, other content: dead-lettered
    ERASED = "erased"  # the customer asked to be forgotten
    CLAMPED_FUTURE_EVENT = "clamped_future_event"
    TRAIT_REJECTED = "trait_rejected"  # a profile trait with an unusable value
    PROFILE_UPDATED = "profile_updated"
    # identity (core/identity.py, core/merging.py)
    FORWARDED = "forwarded"  # for a customer merged into another: sent on to that one
    MERGE_OFFERED = "merge_offered"  # an event linked this customer to another
    MERGE_ACCEPTED = "merge_accepted"  # the survivor asks the other for its state
    MERGE_REFUSED = "merge_refused"  # the guard: a kind that may not merge, or too many
    MERGED_INTO = "merged_into"  # this customer's state went to the survivor
    MERGED = "merged"  # the survivor took in another customer's state
    RUN_MERGED = "run_merged"  # two live runs of one journey: this one ended
    # entering and running a journey
    ENTERED = "entered"
    NOT_ENTERED = "not_entered"
    STEP = "step"
    BRANCH = "branch"
    SPLIT = "split"
    WAIT = "wait"
    WAIT_OVER = "wait_over"
    WAIT_SKIPPED = "wait_skipped"
    WAIT_UNRESOLVED = "wait_unresolved"
    WAIT_FOR = "wait_for"
    WAIT_FOR_MATCHED = "wait_for_matched"
    WAIT_FOR_IGNORED = "wait_for_ignored"
    TIMEOUT = "timeout"
    CONDITION_ERROR = "condition_error"
    ERROR = "error"
    # sends
    SENT = "sent"
    SUPPRESSED = "suppressed"
    DEFERRED = "deferred"
    RUNAWAY = "runaway"  # a run that would send more than one evaluation may
    HANDOFF = "handoff"  # handed to a person: a conversation, or a call-back slot
    # endings
    COMPLETED = "completed"
    EXITED = "exited"
    ABORTED = "aborted"
    HOLDOUT = "holdout"
    GOAL = "goal"
    GOAL_EXIT = "goal_exit"
    NO_TIME = "no_time"
    VERSION_RETIRED = "version_retired"


_NO_DETAIL: Mapping[str, Any] = MappingProxyType({})


class TraceEntry(NamedTuple):
    """One decision. Immutable, like the core's other records; a named tuple rather than
    a frozen dataclass because an evaluation makes several of them (one per step reached)
    and a frozen dataclass takes twice as long to build."""

    at: datetime
    customer_id: str
    kind: TraceKind
    journey: str | None = None
    key: str | None = None
    step: str | None = None
    detail: Mapping[str, Any] = _NO_DETAIL

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"at": format_instant(self.at), "customer_id": self.customer_id,
                             "kind": str(self.kind)}
        for k in ("journey", "key", "step"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        d.update(self.text_detail())
        return d

    def text_detail(self) -> dict[str, Any]:
        """Detail with times as RFC 3339 text (they are kept as datetimes until shown)."""
        return {k: shown(v) for k, v in self.detail.items()}


def shown(value: Any) -> Any:
    """A detail value as text shows it: a time as RFC 3339, anything else as it is."""
    return format_instant(value) if isinstance(value, datetime) else value
