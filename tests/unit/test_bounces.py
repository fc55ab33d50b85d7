"""Bounces and complaints by mail: the DSN/ARF reader and the real SMTP receiver."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest

from omnijourney.adapters.email import EmailChannel
from omnijourney.core.commands import DeliveryReport
from omnijourney.runtime.broker import free_port
from omnijourney.tracking.bounces import BounceServer, read_bounce
from omnijourney.tracking.tokens import REPORT, read_token
from tests.smtp import SmtpServer
from tests.unit.test_email_channel import command

SECRET = "s3cret"


def sent_headers(secret: str = SECRET) -> str:
    """The headers of a message exactly as the email adapter builds it."""
    raw = EmailChannel(tracking_secret=secret).build(command(to="gone@example.com"))
    return raw.as_string().split("\n\n", 1)[0]


def dsn(action: str = "failed", status: str = "5.1.1", *, returned: str | None = None,
        whole_message: bool = False) -> bytes:
    """A delivery status notification as Postfix writes one (RFC 3464)."""
    returned = sent_headers() if returned is None else returned
    last = (f"Content-Type: message/rfc822\n\n{returned}\n\nHi Ana\n" if whole_message
            else f"Content-Type: text/rfc822-headers\n\n{returned}\n")
    return f"""From: MAILER-DAEMON@relay.test (Mail Delivery System)
To: bounces@shop.example
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BB"

--BB
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

--BB
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.test
Original-Envelope-Id: 6b3f0c1e-0000-5000-8000-000000000001

Final-Recipient: rfc822; gone@example.com
Original-Recipient: rfc822;gone@example.com
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <gone@example.com>: Recipient address
    rejected: User unknown in virtual mailbox table

--BB
{last}
--BB--
""".encode()


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\n", b"\r\n")  # SMTP's line ends


def complaint() -> bytes:
    """A spam complaint in the Abuse Reporting Format (RFC 5965) with the whole mail."""
    return f"""From: fbl@mailbox.test
To: bounces@shop.example
Subject: FW: You left something in your cart
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="FF"

--FF
Content-Type: text/plain

This is an email abuse report.

--FF
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeMailbox/1.0
Version: 1

--FF
Content-Type: message/rfc822

{sent_headers()}

Hi Ana
--FF--
""".encode()


def test_a_hard_bounce_is_attributed_by_the_signed_header_it_returns() -> None:
    outcome, rep = read_bounce(dsn(), SECRET)
    assert outcome == "bounced"
    assert rep is not None
    assert (rep.command_id, rep.customer_id, rep.channel, rep.status) == (
        "6b3f0c1e-0000-5000-8000-000000000001", "c1", "email", "bounced")
    assert (rep.journey, rep.instance_key) == ("cart_abandonment", "k1")
    assert rep.reason.startswith("5.1.1 smtp; 550 5.1.1")
    assert "User unknown in virtual mailbox table" in rep.reason  # unfolded
    whole = read_bounce(dsn(whole_message=True), SECRET)
    assert whole[0] == "bounced" and whole[1] is not None


@pytest.mark.parametrize(("action", "status", "outcome"), [
    ("failed", "4.2.2", "failed"),      # the relay gave up (mailbox full for days)
    ("delivered", "2.0.0", "delivered"),
    ("delayed", "4.4.1", "delayed"),    # news only: nothing to report
])
def test_what_else_a_dsn_can_say(action: str, status: str, outcome: str) -> None:
    got, rep = read_bounce(dsn(action, status), SECRET)
    assert got == outcome
    assert (rep is None) == (outcome == "delayed")
    if rep is not None:
        assert rep.status == outcome


def test_a_spam_complaint_unsubscribes() -> None:
    outcome, rep = read_bounce(complaint(), SECRET)
    assert outcome == "unsubscribed"
    assert rep is not None and rep.reason == "complaint: abuse"


def test_forged_unsigned_or_ordinary_mail_is_dropped() -> None:
    assert read_bounce(dsn(returned=sent_headers("other secret")), SECRET) == (
        "unattributed", None)
    assert read_bounce(dsn(returned="From: x@example.com\nSubject: hi"), SECRET) == (
        "unattributed", None)
    assert read_bounce(b"From: a@b.test\nSubject: out of office\n\nBack Monday.", SECRET) == (
        "not_a_report", None)


def test_the_receiver_reports_over_real_smtp_and_asks_for_a_retry_when_it_cannot() -> None:
    reports: list[DeliveryReport] = []
    server = BounceServer(SECRET, reports.append, port=free_port()).start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp:
            smtp.sendmail("", ["bounces@shop.example"], crlf(dsn()))  # null sender, as MTAs do
            smtp.sendmail("", ["bounces@shop.example"], b"Subject: hello\r\n\r\nnot a bounce")
        assert [r.status for r in reports] == ["bounced"]
        assert server.counts == {"bounced": 1, "not_a_report": 1}

        def broker_away(rep: dict[str, Any]) -> None:
            raise OSError("no broker")

        server.report = broker_away
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp, \
                pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail("", ["bounces@shop.example"], crlf(dsn()))
        assert refused.value.smtp_code == 451  # temporary: the MTA keeps it and retries
        assert server.counts == {"bounced": 1, "not_a_report": 1}
    finally:
        server.stop()


def test_the_email_adapter_signs_the_header_and_sends_from_the_return_path() -> None:
    with SmtpServer() as smtp:
        channel = EmailChannel(port=smtp.port, tracking_secret=SECRET,
                               return_path="bounces@shop.example")
        assert channel.deliver(command()).status == "sent"
    (msg,) = smtp.messages
    token = read_token(SECRET, msg["X-Omnijourney-Report"], REPORT)
    assert token is not None and token["c"] == "6b3f0c1e-0000-5000-8000-000000000001"
    assert smtp.recorder.senders == ["bounces@shop.example"]


def test_the_receiver_refuses_oversized_mail_before_reading_it() -> None:
    reports: list[DeliveryReport] = []
    server = BounceServer(SECRET, reports.append, port=free_port(), max_bytes=4096).start()
    try:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as smtp, \
                pytest.raises(smtplib.SMTPResponseException) as refused:
            smtp.sendmail("mailer-daemon@relay.test", ["bounces@shop.example"],
                          dsn() + b"x" * 20_000)
        assert refused.value.smtp_code == 552
    finally:
        server.stop()
    assert reports == []
