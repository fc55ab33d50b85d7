"""SMS, push and webhook channels against a real local HTTP provider."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from omnijourney.adapters.http import TokenBucket, retry_after
from omnijourney.adapters.protocols import TransientError
from omnijourney.adapters.push import FcmStylePush
from omnijourney.adapters.retry import RetryPolicy
from omnijourney.adapters.sms import TwilioStyleSms
from omnijourney.adapters.webhook import SignedWebhook
from omnijourney.core.commands import ChannelCommand
from tests.helpers import as_command
from tests.provider import Provider, Reply

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def command(channel: str, **content: str) -> ChannelCommand:
    return as_command({"command_id": "cmd-1", "channel": channel, "customer_id": "c1",
                       "journey": "j", "step": "s",
                       "to": {"sms": "+15550100", "push": "tok-1"}.get(channel, ""),
                       "send_at": NOW, "deadline": NOW + timedelta(hours=4),
                       "content": content, "transactional": False, "instance_key": ""})


def test_sms_is_form_encoded_with_basic_auth_and_an_idempotency_key() -> None:
    with Provider() as p:
        out = TwilioStyleSms(p.url, "AC1", "secret", "+15550000").deliver(
            command("sms", text="Hi Ana"))
    assert (out.status, out.provider_id) == ("sent", "SM1")
    (req,) = p.requests
    assert req.path == "/2010-04-01/Accounts/AC1/Messages.json"
    assert urllib.parse.parse_qs(req.body.decode()) == {
        "To": ["+15550100"], "From": ["+15550000"], "Body": ["Hi Ana"]}
    assert req.headers["Idempotency-Key"] == "cmd-1"
    assert req.headers["Authorization"].startswith("Basic ")


def test_push_is_fcm_style_json_and_an_unregistered_token_bounces() -> None:
    with Provider([Reply(200), Reply(404, {"error": "UNREGISTERED"}),
                   Reply(400, {"error": "INVALID_ARGUMENT"})]) as p:
        channel = FcmStylePush(p.url, "proj", "token")
        assert channel.deliver(command("push", title="T", text="B", url="u")).status == "sent"
        gone = channel.deliver(replace(command("push", title="T", text="B"), command_id="cmd-2"))
        bad = channel.deliver(replace(command("push", title="T", text="B"), command_id="cmd-3"))
    assert gone.status == "bounced"  # the token is dead: nothing more goes to it
    assert "404" in (gone.reason or "")
    assert bad.status == "failed"  # the request was wrong, not the address
    body = json.loads(p.requests[0].body)
    assert body["message"]["token"] == "tok-1"
    assert body["message"]["notification"] == {"title": "T", "body": "B"}
    assert p.requests[0].path == "/v1/projects/proj/messages:send"


def test_an_sms_to_a_dead_number_bounces_other_refusals_fail() -> None:
    with Provider([Reply(400, {"code": 21211, "message": "Invalid 'To' Phone Number"}),
                   Reply(400, {"code": 21602, "message": "Message body is required"})]) as p:
        channel = TwilioStyleSms(p.url, "AC1", "secret", "+15550000")
        dead = channel.deliver(command("sms", text="Hi"))
        empty = channel.deliver(replace(command("sms", text=""), command_id="cmd-2"))
    assert (dead.status, empty.status) == ("bounced", "failed")
    assert "21211" in (dead.reason or "")


def test_webhooks_are_signed() -> None:
    with Provider() as p:
        cmd = command("webhook", method="POST", url=f"{p.url}/hook", body='{"a":1}',
                      headers=json.dumps({"X-Source": "oj"}))
        assert SignedWebhook("s3cret").deliver(cmd).status == "sent"
    (req,) = p.requests
    stamp = req.headers["X-Omnijourney-Timestamp"]
    expected = hmac.new(b"s3cret", stamp.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert req.headers["X-Omnijourney-Signature"] == f"sha256={expected}"
    assert req.headers["X-Source"] == "oj"


def test_429_and_5xx_are_retried_honouring_retry_after() -> None:
    slept: list[float] = []
    script = [Reply(503), Reply(429, headers={"Retry-After": "7"}), Reply(500), Reply(200)]
    with Provider(script) as p:
        sms, cmd = TwilioStyleSms(p.url, "AC1", "t", "+1"), command("sms", text="x")
        out = RetryPolicy(sleep=slept.append, base_delay=1.0).run(
            lambda: sms.deliver(cmd), deadline=cmd.deadline, what="x", now=lambda: NOW)
    assert out.status == "sent"
    assert len(p.requests) == 4
    assert slept[1] == 7.0  # the provider's Retry-After, not our backoff
    assert 0.5 <= slept[0] <= 1.0
    assert 1.0 <= slept[2] <= 4.0
    assert {r.headers["Idempotency-Key"] for r in p.requests} == {"cmd-1"}


def test_a_5xx_storm_past_the_deadline_expires_instead_of_sending_late() -> None:
    clock = [NOW]

    def sleep(s: float) -> None:
        clock[0] += timedelta(seconds=s)

    with Provider([Reply(503)] * 50) as p:
        sms, cmd = TwilioStyleSms(p.url, "AC1", "t", "+1"), command("sms", text="x")
        out = RetryPolicy(sleep=sleep, attempts=50, base_delay=600, max_delay=3600).run(
            lambda: sms.deliver(cmd), deadline=cmd.deadline, what="x", now=lambda: clock[0])
    assert out.status == "expired"
    assert clock[0] <= NOW + timedelta(hours=4)


def test_timeouts_are_transient() -> None:
    with Provider([Reply(200, delay=1.5)]) as p, pytest.raises(TransientError):
        TwilioStyleSms(p.url, "AC1", "t", "+1", timeout=0.3).deliver(command("sms", text="x"))


def test_token_bucket_spaces_requests() -> None:
    t = [0.0]
    bucket = TokenBucket(rate=10, burst=2, clock=lambda: t[0],
                         sleep=lambda s: t.__setitem__(0, t[0] + s))
    waits = [bucket.acquire() for _ in range(5)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([0.1, 0.1, 0.1])
    assert t[0] == pytest.approx(0.3)


def test_retry_after_parses_seconds_and_dates() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
