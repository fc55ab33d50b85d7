"""The send gate: may this message go to this customer on this channel at this time?

Checked in order, for every journey alike: an address to send to, that address not
bounced, then (for anything not transactional) consent, the customer's own contact window
in their time zone, and the channel's frequency cap. Pure: the customer's state and the
policies in, a decision out; the evaluator turns it into a trace entry and, when the
message may go, a command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from omnijourney.core import profile as prof
from omnijourney.core.catalog import Policies
from omnijourney.core.channels import QUIET_HOURS_CHANNELS
from omnijourney.core.state import CustomerState
from omnijourney.core.timeutil import ContactWindow, format_duration, zone


# One of these for every send: initialisers compiled (native.py: "initialisers"); a
# ``detail`` of None is an empty one.
@dataclass(frozen=True, slots=True, init=False)
class Allowed:
    to: str  # the address the message goes to

    def __init__(self, to: str) -> None:
        object.__setattr__(self, "to", to)


@dataclass(frozen=True, slots=True, init=False)
class Deferred:
    until: datetime
    reason: str  # quiet_hours | frequency_cap
    detail: dict[str, Any] = field(default_factory=dict)

    def __init__(self, until: datetime, reason: str,
                 detail: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "until", until)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "detail", {} if detail is None else detail)


@dataclass(frozen=True, slots=True, init=False)
class Suppressed:
    reason: str  # no_address | address_bounced | no_consent | no_topic_consent | frequency_cap
    detail: dict[str, Any] = field(default_factory=dict)

    def __init__(self, reason: str, detail: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "detail", {} if detail is None else detail)


Decision = Allowed | Deferred | Suppressed


def decide(st: CustomerState, pol: Policies, channel: str, at: datetime, *,
           transactional: bool, quiet_hours: bool = True, on_cap: str = "skip",
           topic: str | None = None) -> Decision:
    """``quiet_hours=False`` for a send already deferred to its window's opening (it goes
    then, even if the window shrank meanwhile); ``on_cap``: ``skip`` or ``defer``;
    ``topic``: the subscription topic the message belongs to (consent to it too)."""
    to = prof.address(st.profile, channel)
    if to is None:
        return Suppressed("no_address")
    if prof.bounced(st.profile, channel):
        return Suppressed("address_bounced")
    if transactional:
        return Allowed(to)
    if not prof.consent_ok(st.profile, channel, pol):
        return Suppressed("no_consent")
    if topic is not None and not prof.subscribed(st.profile, topic, pol):
        return Suppressed("no_topic_consent", {"topic": topic})
    if quiet_hours and channel in QUIET_HOURS_CHANNELS:
        opens, window, tz = window_opening(st, pol, at)
        if opens is not None:
            return Deferred(opens, "quiet_hours", {"window": str(window), "timezone": tz.key})
    cap = pol.caps.get(channel)
    if cap is not None:
        limit, per = cap
        history = st.sent.get(channel, ())
        # Fewer sends than the cap in the whole history: none of them can fill it.
        recent = sorted(t for t in history if t > at - per) if len(history) >= limit else ()
        if len(recent) >= limit:
            words = {"cap": f"{limit} per {format_duration(per)}"}
            if on_cap == "defer":
                # When the oldest send in the window leaves it, one more fits.
                return Deferred(recent[len(recent) - limit] + per, "frequency_cap", words)
            return Suppressed("frequency_cap", words)
    return Allowed(to)


def window_opening(st: CustomerState, pol: Policies, at: datetime
                   ) -> tuple[datetime | None, ContactWindow, ZoneInfo]:
    """When the customer's own contact window (in their zone) next opens after ``at``;
    None when it is open at ``at``."""
    tz = zone(st.profile.get("timezone"), pol.timezone)
    window = pol.contact_window
    custom = st.profile.get("contact_window")
    if custom:
        window = _window_or(custom, window)
    return window.next_open(at, tz), window, tz


def _window_or(text: str, default: ContactWindow) -> ContactWindow:
    try:
        return ContactWindow.parse(text)
    except ValueError:
        return default


SLOT_STEP = timedelta(minutes=15)


def callback_slot(st: CustomerState, pol: Policies, at: datetime, lead: timedelta,
                  duration: timedelta) -> tuple[datetime, datetime, str] | None:
    """The first slot of ``duration``, starting on a quarter hour at least ``lead`` after
    ``at``, that lies wholly inside the customer's contact window in their zone; None if
    none within two weeks (a window shorter than the slot)."""
    start = _ceil(at + lead, SLOT_STEP)
    limit = at + timedelta(days=14)
    while start < limit:
        opens, window, tz = window_opening(st, pol, start)
        if opens is not None:
            start = _ceil(opens, SLOT_STEP)
            continue
        last = (start + duration - timedelta(seconds=1)).astimezone(tz)
        if window.contains(last.time().replace(tzinfo=None)):
            return start, start + duration, tz.key
        start += SLOT_STEP
    return None


def _ceil(t: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=t.tzinfo)
    n = -((epoch - t) // step)  # ceil division
    return epoch + n * step
