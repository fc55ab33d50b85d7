"""The channels, defined once: the journey language's ``channel:``, the command topics,
the adapters' CLI choices, the delivered logs and the metrics ports all read them here."""

from __future__ import annotations

from typing import Literal, get_args

Channel = Literal["email", "sms", "push", "ads", "webhook"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)
# Templates render a message for these (ads carry an audience instead).
TemplateChannel = Literal["email", "sms", "push", "webhook"]
# Channels that wait for the customer's contact window (ads and webhooks do not).
QUIET_HOURS_CHANNELS: frozenset[Channel] = frozenset({"email", "sms", "push"})
# Channels that reach a person at an address of theirs (a webhook reaches a system).
PERSONAL_CHANNELS: tuple[Channel, ...] = tuple(ch for ch in CHANNELS if ch != "webhook")
