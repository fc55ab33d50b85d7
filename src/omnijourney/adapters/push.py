"""Push over an FCM-v1-style JSON HTTP API (base URL configurable)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from omnijourney.adapters.http import call
from omnijourney.adapters.protocols import Outcome
from omnijourney.core.commands import ChannelCommand
from omnijourney.tracking.preferences import PreferenceLinks


@dataclass
class FcmStylePush:
    base_url: str
    project: str
    access_token: str
    timeout: float = 10.0
    name: str = "push"
    links: PreferenceLinks = field(default_factory=PreferenceLinks)  # links.preferences

    def deliver(self, cmd: ChannelCommand) -> Outcome:
        token = cmd.to
        if not isinstance(token, str) or not token or len(token) > 4096 or any(
                ord(c) < 32 or ord(c) == 127 for c in token):
            return Outcome("failed", reason="invalid address: not a device token")
        content = cmd.content
        url = f"{self.base_url.rstrip('/')}/v1/projects/{self.project}/messages:send"
        message = {"message": {
            "token": cmd.to,
            "notification": {"title": content.get("title", ""),
                             "body": self.links.fill(content.get("text", ""), cmd)},
            "data": {"command_id": cmd.command_id,
                     "url": self.links.fill(content.get("url", ""), cmd)},
        }}
        headers = {"Authorization": f"Bearer {self.access_token}",
                   "Content-Type": "application/json", "Idempotency-Key": cmd.command_id}
        # 404 (FCM: UNREGISTERED) means the token is gone: bounced, and the engine sends
        # nothing more to it. Any other permanent refusal comes back failed.
        resp = call("POST", url, body=json.dumps(message).encode(), headers=headers,
                    timeout=self.timeout, what="push provider",
                    address_gone=lambda status, _: status == 404)
        if isinstance(resp, Outcome):
            return resp
        return Outcome("sent", provider_id=str(resp.json().get("name") or "") or None)
