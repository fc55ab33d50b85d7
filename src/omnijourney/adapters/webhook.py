"""Webhooks: the command's request, signed with HMAC-SHA256 so receivers can trust it."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from omnijourney import wallclock
from omnijourney.adapters.http import call
from omnijourney.adapters.protocols import Outcome
from omnijourney.core.commands import ChannelCommand


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass
class SignedWebhook:
    secret: str
    timeout: float = 10.0
    name: str = "webhook"
    clock: wallclock.WallClock = wallclock.now  # the signed timestamp

    def deliver(self, cmd: ChannelCommand) -> Outcome:
        content = cmd.content
        body = content.get("body", "").encode()
        stamp = str(int(self.clock().timestamp()))
        headers = {"Content-Type": "application/json", **json.loads(content.get("headers") or "{}"),
                   "Idempotency-Key": cmd.command_id, "X-Omnijourney-Timestamp": stamp,
                   "X-Omnijourney-Signature": signature(self.secret, stamp, body)}
        resp = call(content.get("method", "POST"), content["url"], body=body, headers=headers,
                    timeout=self.timeout, what="webhook")
        if isinstance(resp, Outcome):
            return resp
        return Outcome("sent", provider_id=f"HTTP {resp.status}")
