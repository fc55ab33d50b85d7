"""SMS over a Twilio-style form-encoded HTTP API (base URL configurable)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from dataclasses import dataclass, field

from omnijourney.adapters.addresses import InvalidAddress, phone_number
from omnijourney.adapters.http import call
from omnijourney.adapters.protocols import Outcome
from omnijourney.core.commands import ChannelCommand
from omnijourney.tracking.preferences import PreferenceLinks
from omnijourney.tracking.tokens import status_callback_url


@dataclass
class TwilioStyleSms:
    base_url: str
    account_sid: str
    auth_token: str
    sender: str
    timeout: float = 10.0
    name: str = "sms"
    # Base URL of ``omnijourney clicks`` (and its secret): the provider then reports each
    # message's fate (delivered, undelivered) there, and the engine sees sms.delivered.
    status_callback: str | None = None
    callback_secret: str = ""
    links: PreferenceLinks = field(default_factory=PreferenceLinks)  # links.preferences

    def deliver(self, cmd: ChannelCommand) -> Outcome:
        try:
            to = phone_number(cmd.to)
        except InvalidAddress as exc:
            return Outcome("failed", reason=f"invalid address: {exc}")
        url = f"{self.base_url.rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        fields = {"To": to, "From": self.sender,
                  "Body": self.links.fill(cmd.content.get("text", ""), cmd)}
        if self.status_callback:
            fields["StatusCallback"] = status_callback_url(self.status_callback,
                                                           self.callback_secret, cmd)
        form = urllib.parse.urlencode(fields).encode()
        auth = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}",
                   "Content-Type": "application/x-www-form-urlencoded",
                   # The provider drops a repeat of the same key: our command_id.
                   "Idempotency-Key": cmd.command_id,
                   "I-Twilio-Idempotency-Token": cmd.command_id}
        resp = call("POST", url, body=form, headers=headers, timeout=self.timeout,
                    what="sms provider", address_gone=number_gone)
        if isinstance(resp, Outcome):
            return resp
        return Outcome("sent", provider_id=str(resp.json().get("sid") or "") or None)


# Twilio's error codes for a number that can never take a message: invalid, not
# reachable by SMS, not a mobile number, unknown to the carrier.
DEAD_NUMBER_CODES = frozenset({21211, 21214, 21612, 21614})


def number_gone(status: int, body: bytes) -> bool:
    """A 400 whose error code says the number itself is dead (not the request)."""
    try:
        code = json.loads(body or b"{}").get("code")
    except (ValueError, AttributeError):
        return False
    return status == 400 and code in DEAD_NUMBER_CODES
