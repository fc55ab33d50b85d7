"""SMS over a Twilio-style form-encoded HTTP API (base URL configurable)."""

from __future__ import annotations

import base64
import urllib.parse
from dataclasses import dataclass
from typing import Any

from omnijourney.adapters.base import Outcome
from omnijourney.adapters.http import call


@dataclass
class TwilioStyleSms:
    base_url: str
    account_sid: str
    auth_token: str
    sender: str
    timeout: float = 10.0
    name: str = "sms"

    def deliver(self, cmd: dict[str, Any]) -> Outcome:
        url = f"{self.base_url.rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        form = urllib.parse.urlencode({"To": cmd["to"], "From": self.sender,
                                       "Body": cmd["content"].get("text", "")}).encode()
        auth = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}",
                   "Content-Type": "application/x-www-form-urlencoded",
                   # The provider drops a repeat of the same key: our command_id.
                   "Idempotency-Key": cmd["command_id"],
                   "I-Twilio-Idempotency-Token": cmd["command_id"]}
        resp = call("POST", url, body=form, headers=headers, timeout=self.timeout,
                    what="sms provider")
        if isinstance(resp, Outcome):
            return resp
        return Outcome("sent", provider_id=str(resp.json().get("sid") or "") or None)
