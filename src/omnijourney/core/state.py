"""Per-customer state: unified profile, live journey instances, memory for rules.

State is plain data with a JSON form (``to_dict``/``from_dict``) so the runtime can keep
it in a changelog-backed table. The evaluator never mutates a state it was given: it
works on ``clone()`` and returns the new one (unless the state is handed over:
``CustomerState.unshared``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from omnijourney.core.events import Event, stored_event
from omnijourney.core.timeutil import format_instant, parse_instant

# Event ids remembered per customer, with a digest of each event's content: a repeat with
# the same content is a redelivery (dropped), with other content a conflict (dead-lettered).
SEEN_EVENT_IDS = 1024
NEVER_ENTRIES_KEPT = 512  # per customer, for once-only journeys keyed by cart or order


# Where a run stands: running its steps, in a wait, in a wait_for, a send deferred (quiet
# hours, a cap), or done (ended, about to leave the state).
InstanceStatus = Literal["running", "wait", "wait_for", "deferred", "done"]
INSTANCE_STATUSES: tuple[InstanceStatus, ...] = get_args(InstanceStatus)


@dataclass(slots=True, init=False)
class Instance:
    """One customer's live run through one journey (per correlation key)."""

    journey: str
    version: int
    key: str
    instance_id: str
    trigger: Event
    last_event: Event
    entered_at: datetime
    step: str
    status: InstanceStatus = "running"
    due_at: datetime | None = None
    cohort: str | None = None
    visits: dict[str, int] = field(default_factory=dict)

    # Compiled (native.py: "initialisers"): one per entry, and per run in a clone;
    # ``visits`` None is an empty one.
    def __init__(  # noqa: PLR0917 (as the dataclass's)
            self, journey: str, version: int, key: str, instance_id: str,
            trigger: Event, last_event: Event, entered_at: datetime, step: str,
            status: InstanceStatus = "running", due_at: datetime | None = None,
            cohort: str | None = None, visits: dict[str, int] | None = None) -> None:
        self.journey = journey
        self.version = version
        self.key = key
        self.instance_id = instance_id
        self.trigger = trigger
        self.last_event = last_event
        self.entered_at = entered_at
        self.step = step
        self.status = status
        self.due_at = due_at
        self.cohort = cohort
        self.visits = {} if visits is None else visits

    @property
    def slot(self) -> str:
        return f"{self.journey}#{self.key}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "journey": self.journey, "version": self.version, "key": self.key,
            "instance_id": self.instance_id, "trigger": self.trigger.to_dict(),
            "last_event": self.last_event.to_dict(),
            "entered_at": format_instant(self.entered_at), "step": self.step,
            "status": self.status,
            "due_at": format_instant(self.due_at) if self.due_at else None,
            "cohort": self.cohort, "visits": dict(self.visits),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instance:
        trigger = stored_event(d["trigger"])
        # Until a run's next event, its last event is its trigger: read once, shared
        # (events are immutable).
        last = d["last_event"]
        return cls(
            journey=d["journey"], version=d["version"], key=d["key"],
            instance_id=d["instance_id"], trigger=trigger,
            last_event=trigger if last == d["trigger"] else stored_event(last),
            entered_at=parse_instant(d["entered_at"]), step=d["step"], status=_status(d["status"]),
            due_at=parse_instant(d["due_at"]) if d.get("due_at") else None,
            cohort=d.get("cohort"), visits=dict(d.get("visits") or {}),
        )


@dataclass(frozen=True, slots=True)
class GoalWatch:
    """A conversion window opened when a customer entered a journey with a goal."""

    journey: str
    version: int
    key: str
    instance_id: str
    cohort: str | None
    entered_at: datetime
    deadline: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"journey": self.journey, "version": self.version, "key": self.key,
                "instance_id": self.instance_id, "cohort": self.cohort,
                "entered_at": format_instant(self.entered_at),
                "deadline": format_instant(self.deadline)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GoalWatch:
        return cls(d["journey"], d["version"], d["key"], d["instance_id"], d.get("cohort"),
                   parse_instant(d["entered_at"]), parse_instant(d["deadline"]))


class _Holding:
    """Who holds a state object, which is no part of its value: slots outside the
    dataclass's fields, so never compared, copied by ``replace`` or written."""

    __slots__ = ("seen_owned", "unshared")
    # Whether ``seen`` is this state's own: a clone shares it until ``remember`` writes
    # (a tick, most product views' repeats and every merge message read it only).
    seen_owned: bool
    # Held by no one else: a reader that loaded it for one evaluation (the worker's
    # state table, which takes it out of its cache or decodes it) hands it over, and
    # ``evaluate`` works on it in place instead of on a copy. Cleared when the evaluator
    # takes it.
    unshared: bool

    # Set in this class only: type checkers do not see slots a dataclass with slots of
    # its own inherits. The dataclass's ``__init__`` calls this one.
    def __post_init__(self) -> None:
        self.seen_owned, self.unshared = True, False

    def share_seen(self, shared: bool = True) -> None:
        self.seen_owned = not shared

    def hand_over(self, handed: bool = True) -> None:
        self.unshared = handed


@dataclass(slots=True)
class CustomerState(_Holding):
    customer_id: str
    profile: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    entries: dict[str, datetime] = field(default_factory=dict)  # slot -> last entered
    goals: list[GoalWatch] = field(default_factory=list)
    sent: dict[str, list[datetime]] = field(default_factory=dict)  # marketing sends per channel
    seen: dict[str, str] = field(default_factory=dict)  # recent event id -> fingerprint
    clock: datetime | None = None  # latest moment this customer's state has reached
    # Merged into another customer (core/identity.py): nothing else is kept; what still
    # arrives for this one goes on to that one.
    merged_into: str | None = None


    def prune(self, horizon: timedelta,
              re_entry: Callable[[str], str | timedelta | None] | None) -> None:
        """Forget what no rule can need any more, so the state stays bounded: sends older
        than the longest cap window (``horizon``), goals past their deadline, and (when
        ``re_entry`` is given: the entry memory grew) entries whose journey's
        ``re_entry`` (``never``, ``always``, a duration, None for a journey gone) no
        longer needs them; once-only entries keep the latest NEVER_ENTRIES_KEPT."""
        if self.clock is None:
            return
        for ch, times in list(self.sent.items()):
            if times[0] > self.clock - horizon:
                continue  # times are in order: nothing has aged out
            kept = [t for t in times if t > self.clock - horizon]
            if kept:
                self.sent[ch] = kept
            else:
                del self.sent[ch]
        if self.goals:
            self.goals = [g for g in self.goals if g.deadline >= self.clock]
        if re_entry is None:
            return  # entry memory only grows on entry, so only then can it need pruning
        never: list[tuple[datetime, str]] = []
        for slot, last in list(self.entries.items()):
            rule = re_entry(slot.split("#", 1)[0])
            if rule is None or rule == "always" or (
                isinstance(rule, timedelta) and self.clock - last >= rule
            ):
                if slot not in self.instances:
                    del self.entries[slot]
            elif rule == "never":
                never.append((last, slot))
        if len(never) > NEVER_ENTRIES_KEPT:
            for _, slot in sorted(never)[: len(never) - NEVER_ENTRIES_KEPT]:
                del self.entries[slot]

    def clone(self) -> CustomerState:
        self.share_seen()  # shared from now on: neither writes it in place
        copy = CustomerState(
            customer_id=self.customer_id,
            profile=_copy_profile(self.profile),
            instances={k: _copy_instance(v) for k, v in self.instances.items()},
            entries=dict(self.entries),
            goals=list(self.goals),
            sent={k: list(v) for k, v in self.sent.items()},
            seen=self.seen,
            clock=self.clock,
            merged_into=self.merged_into,
        )
        copy.share_seen()
        return copy

    def next_due(self) -> datetime | None:
        """When this customer next needs a timer tick (the runtime indexes this)."""
        dues = [i.due_at for i in self.instances.values() if i.due_at is not None]
        return min(dues) if dues else None

    def remember(self, event_id: str, fingerprint: str = "") -> bool:
        """Record an event id; False if it was seen before (a redelivery)."""
        if event_id in self.seen:
            return False
        if not self.seen_owned:
            self.seen = dict(self.seen)
            self.share_seen(False)
        self.seen[event_id] = fingerprint
        if len(self.seen) > SEEN_EVENT_IDS:
            del self.seen[next(iter(self.seen))]
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "profile": self.profile,
            "instances": {k: v.to_dict() for k, v in self.instances.items()},
            "entries": {k: format_instant(v) for k, v in self.entries.items()},
            "goals": [g.to_dict() for g in self.goals],
            "sent": {k: [format_instant(t) for t in v] for k, v in self.sent.items()},
            "seen": self.seen,
            "clock": format_instant(self.clock) if self.clock else None,
            **({"merged_into": self.merged_into} if self.merged_into else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CustomerState:
        cid = d["customer_id"]
        if not isinstance(cid, str):
            # As the compiled class refuses it (a number here read as a number before).
            raise TypeError(f"customer_id is not a string but {type(cid).__name__}")
        return cls(
            customer_id=cid,
            profile=d.get("profile") or {},
            instances={k: Instance.from_dict(v) for k, v in (d.get("instances") or {}).items()},
            entries={k: parse_instant(v) for k, v in (d.get("entries") or {}).items()},
            goals=[GoalWatch.from_dict(g) for g in d.get("goals") or []],
            sent={k: [parse_instant(t) for t in v] for k, v in (d.get("sent") or {}).items()},
            seen=_seen(d.get("seen")),
            clock=parse_instant(d["clock"]) if d.get("clock") else None,
            merged_into=d.get("merged_into") or None,
        )


_STRINGS_ONLY = frozenset({str})


def _seen(value: Any) -> dict[str, str]:
    # The types of the values, collected in C (a generator took a tenth of a state's read).
    if type(value) is dict and set(map(type, value.values())) <= _STRINGS_ONLY:
        return value  # as this engine writes it (JSON keys are strings): read as it is
    if isinstance(value, dict):
        return {str(k): str(v or "") for k, v in value.items()}
    # States written before fingerprints: a list of ids, content unknown.
    return dict.fromkeys(map(str, value or []), "")


def _copy_profile(p: dict[str, Any]) -> dict[str, Any]:
    # Profile values are JSON scalars except these maps, whose own values the fold
    # replaces rather than changes (attributes are replaced whole); copying them is
    # enough and several times cheaper than deepcopy on the hot path.
    c = dict(p)
    for key in ("consent", "attributes", "counts", "channels", "identifiers", "bounced",
                "subscriptions"):
        if key in c:
            c[key] = dict(c[key])
    return c


def _copy_instance(i: Instance) -> Instance:
    return Instance(i.journey, i.version, i.key, i.instance_id, i.trigger, i.last_event,
                    i.entered_at, i.step, i.status, i.due_at, i.cohort, dict(i.visits))


def _status(text: str) -> InstanceStatus:
    for status in INSTANCE_STATUSES:
        if status == text:
            return status
    raise ValueError(f"not a run status: {text!r}")
