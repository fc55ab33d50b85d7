"""Push over an FCM-v1-style JSON HTTP API (base URL configurable)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from omnijourney.adapters.base import Outcome
from omnijourney.adapters.http import PermanentError, check, request


@dataclass
class FcmStylePush:
    base_url: str
    project: str
    access_token: str
    timeout: float = 10.0
    name: str = "push"

    def deliver(self, cmd: dict[str, Any]) -> Outcome:
        content = cmd["content"]
        url = f"{self.base_url.rstrip('/')}/v1/projects/{self.project}/messages:send"
        message = {"message": {
            "token": cmd["to"],
            "notification": {"title": content.get("title", ""), "body": content.get("text", "")},
            "data": {"command_id": cmd["command_id"], "url": content.get("url", "")},
        }}
        headers = {"Authorization": f"Bearer {self.access_token}",
                   "Content-Type": "application/json", "Idempotency-Key": cmd["command_id"]}
        try:
            resp = check(request("POST", url, body=json.dumps(message).encode(), headers=headers,
                                 timeout=self.timeout), "push provider")
        except PermanentError as exc:  # e.g. 404 UNREGISTERED: the token is gone for good
            return Outcome("failed", reason=str(exc))
        return Outcome("sent", provider_id=str(resp.json().get("name") or "") or None)
