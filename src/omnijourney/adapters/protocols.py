"""What a channel is to the runner: the protocols a provider's adapter implements, the
outcome it returns, and the errors that steer the retries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from omnijourney.core.commands import ChannelCommand, DeliveryStatus


@dataclass(frozen=True)
class Outcome:
    status: DeliveryStatus  # sent | failed (permanent) | bounced (the address is dead) | expired
    provider_id: str | None = None
    reason: str | None = None


class TransientError(Exception):
    """Worth retrying: connection trouble, 4xx-temporary, 5xx, 429."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class Unconfirmed(Exception):
    """The provider may or may not have the message (a timeout after an SMTP DATA was
    sent in full): what happens next is ``ADAPTER_UNCONFIRMED``'s call, as after a crash."""


class Channel(Protocol):
    name: str

    def deliver(self, command: ChannelCommand) -> Outcome: ...


@runtime_checkable
class BatchChannel(Channel, Protocol):
    """A channel whose provider takes many commands in one request (ad audiences)."""

    def deliver_batch(self, commands: list[ChannelCommand]) -> dict[str, Outcome]: ...


class Limiter(Protocol):
    def acquire(self) -> float: ...
