"""Webhooks: the command's request, signed with HMAC-SHA256 so receivers can trust it.

A hand-off (the journey step ``handoff``: content ``callback: handoff``) goes to a
helpdesk the same way, with ``X-Omnijourney-Callback``: a signed URL on the tracking
server where the helpdesk reports ``handoff.accepted``, ``handoff.resolved`` and
``callback.completed`` (tracking/clicks.py, ``POST /h/<token>``)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from omnijourney import wallclock
from omnijourney.adapters.http import call
from omnijourney.adapters.protocols import Outcome
from omnijourney.core.commands import ChannelCommand
from omnijourney.tracking.tokens import HANDOFF, make_token


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass
class SignedWebhook:
    secret: str
    timeout: float = 10.0
    name: str = "webhook"
    clock: wallclock.WallClock = wallclock.now  # the signed timestamp
    tracking_url: str | None = None  # where a helpdesk's answers to a hand-off go
    tracking_secret: str = ""

    def deliver(self, cmd: ChannelCommand) -> Outcome:
        content = cmd.content
        body = content.get("body", "").encode()
        stamp = str(int(self.clock().timestamp()))
        headers = {"Content-Type": "application/json", **json.loads(content.get("headers") or "{}"),
                   "Idempotency-Key": cmd.command_id, "X-Omnijourney-Timestamp": stamp,
                   "X-Omnijourney-Signature": signature(self.secret, stamp, body)}
        if content.get("callback") == "handoff" and self.tracking_url:
            token = make_token(self.tracking_secret, cmd, "", HANDOFF)
            headers["X-Omnijourney-Callback"] = f"{self.tracking_url.rstrip('/')}/h/{token}"
        resp = call(content.get("method", "POST"), content["url"], body=body, headers=headers,
                    timeout=self.timeout, what="webhook")
        if isinstance(resp, Outcome):
            return resp
        return Outcome("sent", provider_id=f"HTTP {resp.status}")
