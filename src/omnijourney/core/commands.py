"""Intents out: channel-send commands.

A ChannelCommand is exactly what lands on ``commands.<channel>`` (Avro schema
schemas/channel_command.avsc) and what ``omnijourney simulate`` prints.
``command_id`` is deterministic, so adapters can drop duplicates from at-least-once delivery.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, Literal, get_args

from omnijourney.core.timeutil import format_instant

# Fixed namespace: changing it would change every command id ever issued.
COMMAND_NAMESPACE = uuid.UUID("6f1c1a52-3b7e-5d8e-9a51-0e6a1f9b7c21")


_NAMESPACE_BYTES = COMMAND_NAMESPACE.bytes


def command_id(*parts: str) -> str:
    """``str(uuid.uuid5(COMMAND_NAMESPACE, "\\x1f".join(parts)))``, computed without the
    UUID object (twice as fast, and ids are made for every instance and command); a test
    checks it against ``uuid.uuid5``."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True, init=False)
class ChannelCommand:
    command_id: str
    journey: str
    journey_version: str
    step: str
    channel: str
    customer_id: str
    send_at: datetime
    deadline: datetime
    template: str | None
    to: str | None
    content: dict[str, Any]
    transactional: bool
    trigger_event_id: str
    instance_key: str
    locale: str | None = None

    # Written out (``init=False``) so that mypyc compiles it (native.py: "initialisers"):
    # a command is made for every send.
    def __init__(  # noqa: PLR0917 (as the dataclass's)
            self, command_id: str, journey: str, journey_version: str, step: str,
            channel: str, customer_id: str, send_at: datetime, deadline: datetime,
            template: str | None, to: str | None, content: dict[str, Any],
            transactional: bool, trigger_event_id: str, instance_key: str,
            locale: str | None = None) -> None:
        object.__setattr__(self, "command_id", command_id)
        object.__setattr__(self, "journey", journey)
        object.__setattr__(self, "journey_version", journey_version)
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "channel", channel)
        object.__setattr__(self, "customer_id", customer_id)
        object.__setattr__(self, "send_at", send_at)
        object.__setattr__(self, "deadline", deadline)
        object.__setattr__(self, "template", template)
        object.__setattr__(self, "to", to)
        object.__setattr__(self, "content", content)
        object.__setattr__(self, "transactional", transactional)
        object.__setattr__(self, "trigger_event_id", trigger_event_id)
        object.__setattr__(self, "instance_key", instance_key)
        object.__setattr__(self, "locale", locale)

    @classmethod
    def from_dict(cls, rec: dict[str, Any]) -> ChannelCommand:
        """From the Avro record (times already timezone-aware datetimes)."""
        return cls(**{k: rec[k] for k in _COMMAND_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "journey": self.journey,
            "journey_version": self.journey_version,
            "step": self.step,
            "channel": self.channel,
            "customer_id": self.customer_id,
            "send_at": format_instant(self.send_at),
            "deadline": format_instant(self.deadline),
            "template": self.template,
            "to": self.to,
            "content": self.content,
            "transactional": self.transactional,
            "trigger_event_id": self.trigger_event_id,
            "instance_key": self.instance_key,
            "locale": self.locale,
        }


_COMMAND_FIELDS = tuple(f.name for f in fields(ChannelCommand))

# What can become of a command (schemas/delivery_report.avsc's DeliveryStatus).
DeliveryStatus = Literal["sent", "delivered", "failed", "bounced", "opened", "clicked",
                         "unsubscribed", "expired"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)


def delivery_status(text: str) -> DeliveryStatus:
    """``text`` as a DeliveryStatus; ValueError if it is none."""
    for status in DELIVERY_STATUSES:
        if status == text:
            return status
    raise ValueError(f"not a delivery status: {text!r}")


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What an adapter (or the click and bounce receivers) observed for one command, as it
    lands on ``deliveries`` (schemas/delivery_report.avsc); the engine folds it back in
    as an event such as ``email.clicked``."""

    command_id: str
    customer_id: str
    channel: str
    status: DeliveryStatus
    at: datetime
    # What the provider said, when it said anything.
    provider_id: str | None = None
    reason: str | None = None
    # Where the command came from: its journey and run, so the fact reaches that run.
    journey: str | None = None
    instance_key: str | None = None
    address_digest: str | None = None  # which address it is about, as the profile keeps it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, rec: dict[str, Any]) -> DeliveryReport:
        """From the Avro record; a v1 writer's record has no ``address_digest``."""
        return cls(command_id=rec["command_id"], customer_id=rec["customer_id"],
                   channel=rec["channel"], status=rec["status"], at=rec["at"],
                   provider_id=rec.get("provider_id"), reason=rec.get("reason"),
                   journey=rec.get("journey"), instance_key=rec.get("instance_key"),
                   address_digest=rec.get("address_digest"))
