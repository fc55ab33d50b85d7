"""Facts in: the touchpoint event envelope.

Events are past-tense facts about a customer. The JSON form used in files is
``{"event_id", "type", "customer_id", "occurred_at", "source"?, "properties"?}``;
the Avro form (schemas/touchpoint_event.avsc) carries the same fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from omnijourney.core.timeutil import format_instant, parse_instant

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

# What adapters report per command (schemas/delivery_report.avsc); each becomes the
# event ``<channel>.<status>``, e.g. email.clicked or sms.failed.
DELIVERY_STATUSES = ("sent", "delivered", "failed", "bounced", "opened", "clicked",
                     "unsubscribed", "expired")
_CHANNELS = ("email", "sms", "push", "ads", "webhook")

# Event types the engine itself understands (profile folding, delivery feedback).
# Journeys may trigger on any other well-formed type too.
KNOWN_EVENT_TYPES = frozenset(
    {
        "customer.signed_up",
        "customer.updated",
        "consent.updated",
        "product.viewed",
        "cart.item_added",
        "cart.item_removed",
        "order.placed",
        "order.cancelled",
        "shipment.updated",
        "email.delivered",
        "email.opened",
        "email.clicked",
        "email.bounced",
        "email.unsubscribed",
        "sms.delivered",
        "sms.failed",
        "sms.unsubscribed",
        "push.delivered",
        "push.opened",
        "push.unsubscribed",
    }
    | {f"{ch}.{status}" for ch in _CHANNELS for status in DELIVERY_STATUSES}
)


class InvalidEvent(ValueError):
    """An event that cannot be processed; the reason goes to the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: str
    customer_id: str
    occurred_at: datetime
    source: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "customer_id": self.customer_id,
            "occurred_at": format_instant(self.occurred_at),
            "source": self.source,
            "properties": dict(self.properties),
        }

    def expr_view(self) -> dict[str, Any]:
        """The event as conditions and templates see it (``event.*``)."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "customer_id": self.customer_id,
            "occurred_at": self.occurred_at,
            "source": self.source,
            "properties": dict(self.properties),
        }


_ALLOWED_KEYS = {"event_id", "type", "customer_id", "occurred_at", "source", "properties"}


def delivery_event(report: Mapping[str, Any], correlate_by: str | None = None) -> Event:
    """A delivery report as the fact it records (``email.clicked`` ...).

    The event id is derived from the command and status, so a re-sent report is a
    duplicate. When the command's journey correlates by a property (cart_id ...), the
    command's instance key is set under that name, so the fact reaches that instance.
    """
    channel, status = str(report["channel"]), str(report["status"])
    if channel not in _CHANNELS or status not in DELIVERY_STATUSES:
        raise InvalidEvent(f"unknown delivery {channel}.{status}")
    props: dict[str, Any] = {"command_id": report["command_id"]}
    for key in ("journey", "provider_id", "reason", "instance_key"):
        if report.get(key):
            props[key] = report[key]
    if correlate_by and report.get("instance_key"):
        props[correlate_by] = report["instance_key"]
    return Event(
        event_id=f"delivery:{report['command_id']}:{status}",
        type=f"{channel}.{status}",
        customer_id=str(report["customer_id"]),
        occurred_at=report["at"],
        source=channel,
        properties=props,
    )


def parse_event(data: Any) -> Event:
    """Validate a JSON-shaped event. Raises InvalidEvent naming the first problem."""
    if not isinstance(data, Mapping):
        raise InvalidEvent(f"an event must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - _ALLOWED_KEYS)
    if unknown:
        raise InvalidEvent(f"unknown envelope field(s): {', '.join(unknown)}")
    for key in ("event_id", "type", "customer_id"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidEvent(f"missing or empty '{key}'")
    etype = data["type"]
    if not EVENT_TYPE.match(etype):
        raise InvalidEvent(f"event type '{etype}' is not of the form 'noun.past_tense_verb'")
    if "occurred_at" not in data:
        raise InvalidEvent("missing 'occurred_at'")
    try:
        occurred_at = parse_instant(data["occurred_at"])
    except ValueError as exc:
        raise InvalidEvent(f"occurred_at: {exc}") from None
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise InvalidEvent("'source' must be a string")
    props = data.get("properties") or {}
    if not isinstance(props, Mapping):
        raise InvalidEvent("'properties' must be an object")
    return Event(
        event_id=data["event_id"],
        type=etype,
        customer_id=data["customer_id"],
        occurred_at=occurred_at,
        source=source,
        properties=dict(props),
    )
