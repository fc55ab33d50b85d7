"""Ad-audience sync: add/remove retargeting members, batched per audience, to an HTTP
endpoint or, where there is none, a JSON-lines file sink."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnijourney import wallclock
from omnijourney.adapters.http import call
from omnijourney.adapters.protocols import Outcome
from omnijourney.core.commands import ChannelCommand
from omnijourney.core.timeutil import format_instant


@dataclass
class AudienceSync:
    endpoint: str | None = None  # POST {endpoint}/audiences/{audience}/members
    token: str | None = None
    sink: Path | None = None  # append {"audience", "action", "members", ...} lines
    timeout: float = 10.0
    name: str = "ads"
    clock: wallclock.WallClock = wallclock.now  # stamps the sink's lines

    def deliver(self, cmd: ChannelCommand) -> Outcome:
        return self.deliver_batch([cmd])[cmd.command_id]

    def deliver_batch(self, commands: list[ChannelCommand]) -> dict[str, Outcome]:
        groups: dict[tuple[str, str], list[ChannelCommand]] = defaultdict(list)
        for cmd in commands:
            groups[(cmd.content["audience"], cmd.content.get("action", "add"))].append(cmd)
        out: dict[str, Outcome] = {}
        for (audience, action), cmds in sorted(groups.items()):
            ids = sorted(c.command_id for c in cmds)
            # hashed identifiers (sha256:...)
            members = sorted({c.to for c in cmds if c.to is not None})
            # The same set of commands always makes the same key: a retried batch is
            # recognisable by the platform.
            key = hashlib.sha256("\x1f".join(ids).encode()).hexdigest()
            body = {"action": action, "members": members, "idempotency_key": key,
                    "command_ids": ids}
            outcome = self._send(audience, body)
            out.update(dict.fromkeys(ids, outcome))
        return out

    def _send(self, audience: str, body: dict[str, Any]) -> Outcome:
        provider_id = f"{audience}:{body['action']}:{len(body['members'])}"
        if self.endpoint:
            headers = {"Content-Type": "application/json",
                       "Idempotency-Key": body["idempotency_key"]}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            resp = call("POST", f"{self.endpoint.rstrip('/')}/audiences/{audience}/members",
                        body=json.dumps(body).encode(), headers=headers, timeout=self.timeout,
                        what="audience endpoint")
            return resp if isinstance(resp, Outcome) else Outcome("sent", provider_id=provider_id)
        if self.sink is None:
            return Outcome("failed", reason="no audience endpoint or sink configured")
        with self.sink.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"audience": audience, **body,
                                 "at": format_instant(self.clock())}) + "\n")
        return Outcome("sent", provider_id=provider_id)
