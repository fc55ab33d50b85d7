"""The email channel against a real local SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from omnijourney.adapters.email import EmailChannel
from omnijourney.adapters.protocols import TransientError
from omnijourney.core.commands import ChannelCommand
from omnijourney.runtime.broker import free_port
from tests.helpers import as_command
from tests.smtp import SmtpServer


def command(**over: Any) -> ChannelCommand:
    at = datetime(2026, 3, 2, 12, tzinfo=UTC)
    cmd = {"command_id": "6b3f0c1e-0000-5000-8000-000000000001", "journey": "cart_abandonment",
           "step": "cart_reminder", "channel": "email", "customer_id": "c1",
           "send_at": at, "deadline": at + timedelta(hours=24), "template": "cart_reminder",
           "to": "ana@example.com", "transactional": False, "trigger_event_id": "e1",
           "instance_key": "k1", "locale": "en",
           "content": {"subject": "You left something", "text": "Hi Ana",
                       "html": "<p>Hi Ana</p>", "preheader": "Trail runner 2"}}
    cmd.update(over)
    return as_command(cmd)


def test_mime_headers_and_parts() -> None:
    msg = EmailChannel(domain="mail.test").build(command())
    assert msg["Message-ID"] == "<6b3f0c1e-0000-5000-8000-000000000001@mail.test>"
    assert msg["List-Unsubscribe"] == (
        "<https://shop.example/unsubscribe/6b3f0c1e-0000-5000-8000-000000000001>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}
    assert parts["text/plain"].strip() == "Hi Ana"
    assert parts["text/html"].strip() == "<p>Hi Ana</p>"
    receipt = EmailChannel().build(command(transactional=True, content={"subject": "s",
                                                                        "text": "t"}))
    assert receipt["List-Unsubscribe"] is None
    assert receipt.get_content_type() == "text/plain"


def test_delivers_over_real_smtp() -> None:
    with SmtpServer() as smtp:
        outcome = EmailChannel(port=smtp.port).deliver(command())
    assert outcome.status == "sent"
    (got,) = smtp.messages
    assert got["To"] == "ana@example.com"
    assert got["Subject"] == "You left something"
    assert got["Message-ID"] == outcome.provider_id


def test_a_permanent_refusal_is_a_hard_bounce_and_temporary_ones_retry() -> None:
    with SmtpServer(refuse={"gone@example.com": "550 no such user",
                            "busy@example.com": "451 try later"}) as smtp:
        channel = EmailChannel(port=smtp.port)
        gone = channel.deliver(command(to="gone@example.com"))
        assert gone.status == "bounced"
        assert "550" in (gone.reason or "") and "no such user" in (gone.reason or "")
        with pytest.raises(TransientError, match="temporarily"):
            channel.deliver(command(to="busy@example.com"))
    assert smtp.messages == []


def test_an_unreachable_server_is_transient() -> None:
    with pytest.raises(TransientError, match="SMTP connection"):
        EmailChannel(port=free_port(), timeout=2).deliver(command())
