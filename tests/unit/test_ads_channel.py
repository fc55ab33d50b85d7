"""Audience sync batches members per audience and action."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from omnijourney.adapters.ads import AudienceSync
from omnijourney.core.commands import ChannelCommand
from tests.provider import Provider, Reply
from tests.unit.test_http_channels import command


def ad(cid: str, to: str, audience: str, action: str = "add") -> ChannelCommand:
    return replace(command("ads", audience=audience, action=action), command_id=cid, to=to)


BATCH = [ad("a", "sha256:1", "carts"), ad("b", "sha256:2", "carts"),
         ad("c", "sha256:1", "carts"), ad("d", "sha256:3", "browsers"),
         ad("e", "sha256:2", "carts", "remove")]


def test_one_request_per_audience_and_action() -> None:
    with Provider() as p:
        out = AudienceSync(endpoint=p.url, token="t").deliver_batch(BATCH)
    assert {k: v.status for k, v in out.items()} == dict.fromkeys("abcde", "sent")
    sent = {(r.path, json.loads(r.body)["action"]): json.loads(r.body) for r in p.requests}
    assert len(p.requests) == 3
    carts = sent[("/audiences/carts/members", "add")]
    assert carts["members"] == ["sha256:1", "sha256:2"]
    assert carts["command_ids"] == ["a", "b", "c"]
    assert sent[("/audiences/carts/members", "remove")]["members"] == ["sha256:2"]
    keys = {r.headers["Idempotency-Key"] for r in p.requests}
    assert len(keys) == 3


def test_a_rejected_audience_fails_only_its_commands() -> None:
    with Provider([Reply(200), Reply(403, {"error": "audience closed"}), Reply(200)]) as p:
        out = AudienceSync(endpoint=p.url).deliver_batch(BATCH)
    # Groups go out in order: browsers/add, carts/add (refused), carts/remove.
    assert sorted(k for k, v in out.items() if v.status == "failed") == ["a", "b", "c"]
    assert len(p.requests) == 3


def test_file_sink(tmp_path: Path) -> None:
    sink = tmp_path / "audiences.jsonl"
    AudienceSync(sink=sink).deliver_batch(BATCH[:2])
    (line,) = [json.loads(x) for x in sink.read_text().splitlines()]
    assert (line["audience"], line["members"]) == ("carts", ["sha256:1", "sha256:2"])
