"""Adapters against hostile addresses, content and provider replies, on real local servers:
nothing reaches a stranger, nothing crashes, no wait is unbounded, no timeout triples a
mail, and a bounce or a token means exactly what it says."""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.parse
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from omnijourney.adapters.addresses import InvalidAddress, email_address
from omnijourney.adapters.email import EmailChannel
from omnijourney.adapters.protocols import Outcome, TransientError
from omnijourney.adapters.retry import RetryPolicy
from omnijourney.adapters.runner import _Attempts
from omnijourney.adapters.sms import TwilioStyleSms
from omnijourney.core import CustomerState
from omnijourney.core.commands import DeliveryReport
from omnijourney.core.events import delivery_event
from omnijourney.core.profile import address_digest, bounced, fold
from omnijourney.core.redaction import digest, scrub
from omnijourney.tracking.bounces import read_bounce
from omnijourney.tracking.clicks import ClickServer
from omnijourney.tracking.tokens import (
    REPORT,
    STATUS,
    UNSUBSCRIBE,
    make_token,
    track,
    twilio_signature,
)
from tests.provider import Provider, Reply
from tests.smtp import SmtpServer
from tests.unit.test_bounces import SECRET, dsn
from tests.unit.test_clicks import clicked
from tests.unit.test_email_channel import command

# ------------------------------------------------------------------ recipients


@pytest.mark.parametrize("to", [
    "ana@example.com, victim1@example.org",
    "ana@example.com\r\nBcc: victim@example.org",
    "Ana <ana@example.com>",
    "ana@example.com;victim@example.org",
    "\"quoted\"@example.com",
    "",
])
def test_an_address_that_is_not_one_addr_spec_reaches_nobody(to: str) -> None:
    with SmtpServer() as smtp:
        outcome = EmailChannel(port=smtp.port).deliver(command(to=to))
    assert outcome.status == "failed"
    assert (outcome.reason or "").startswith("invalid address:")
    assert "victim" not in (outcome.reason or "")
    assert smtp.messages == []


def test_the_envelope_names_the_one_recipient_never_the_headers() -> None:
    with SmtpServer() as smtp:
        assert EmailChannel(port=smtp.port).deliver(command()).status == "sent"
    assert smtp.recorder.recipients == [["ana@example.com"]]


def test_cr_lf_in_a_rendered_subject_cannot_add_a_header() -> None:
    hostile = {"subject": "Hi\r\nBcc: victim@example.org\r\nX-Evil: 1", "text": "t",
               "preheader": "p\nq"}
    with SmtpServer() as smtp:
        assert EmailChannel(port=smtp.port).deliver(command(content=hostile)).status == "sent"
    (msg,) = smtp.messages
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["Subject"] == "Hi Bcc: victim@example.org X-Evil: 1"
    assert smtp.recorder.recipients == [["ana@example.com"]]


def test_sms_numbers_must_be_e164() -> None:
    with Provider() as provider:
        sms = TwilioStyleSms(provider.url, "AC1", "t", "+15550000")
        for bad in ("+1555\r\n0100", "555-0100", "+15550100&To=+15559999", "+0123456789"):
            outcome = sms.deliver(replace(command(), channel="sms", to=bad,
                                       content={"text": "Hi"}))
            assert outcome.status == "failed" and "E.164" in (outcome.reason or ""), bad
    assert provider.requests == []


# ------------------------------------------------------------- broken providers


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"sid\": ",  # IncompleteRead
    b"garbage that is no status line\r\n\r\n",  # BadStatusLine
    b"",  # closed without a word: RemoteDisconnected
])
def test_a_truncated_or_garbled_reply_is_transient_not_a_crash(raw: bytes) -> None:
    with Provider([Reply(raw=raw)]) as provider:
        sms = TwilioStyleSms(provider.url, "AC1", "t", "+15550000", timeout=5)
        with pytest.raises(TransientError, match=r"broken reply|Remote|closed"):
            sms.deliver(replace(command(), channel="sms", to="+15550100", content={"text": "x"}))


def test_a_retry_after_is_capped_by_the_backoff_maximum() -> None:
    slept: list[float] = []
    calls = iter([TransientError("429", retry_after=3600.0), Outcome("sent")])

    def once() -> Outcome:
        step = next(calls)
        if isinstance(step, Exception):
            raise step
        return step

    now = datetime(2026, 3, 2, tzinfo=UTC)
    out = RetryPolicy(max_delay=30.0, sleep=slept.append).run(
        once, deadline=now + timedelta(days=1), what="x", now=lambda: now)
    assert out == Outcome("sent") and slept == [30.0]


# ------------------------------------------------------- ambiguous SMTP timeouts


@pytest.mark.parametrize(("policy", "copies"), [("resend", 2), ("skip", 1)])
def test_a_timeout_after_data_follows_the_unconfirmed_policy(policy: str, copies: int) -> None:
    """The server takes the message, then never answers the end of DATA: the client
    cannot know. Retrying as if nothing was sent gave three copies; now ``resend`` sends
    one more (same Message-ID) and ``skip`` none, and the outcome says unconfirmed."""
    with SmtpServer(stall_at=1, stall_for=4.0, stall_every=True) as smtp:
        channel = _Attempts(EmailChannel(port=smtp.port, timeout=1.0), policy)
        now = datetime(2026, 3, 2, tzinfo=UTC)
        out = RetryPolicy(attempts=6, sleep=lambda s: None).run(
            lambda: channel.deliver(command()), deadline=None, what="x", now=lambda: now)
    assert out.status == "failed" and "unconfirmed" in (out.reason or "")
    assert len(smtp.messages) == copies
    assert len({m["Message-ID"] for m in smtp.messages}) == 1


# ---------------------------------------------------------------------- bounces


def test_a_bounce_suppresses_exactly_the_address_that_bounced() -> None:
    # The customer moved on to new@: a late DSN for the old address names it in its
    # Final-Recipient, and the new address stays reachable.
    _, rep = read_bounce(dsn(), SECRET)  # the DSN's Final-Recipient is gone@example.com
    assert rep is not None and rep.address_digest == address_digest("gone@example.com")
    profile: dict[str, Any] = {}
    fold(profile, _event("customer.signed_up", {"email": "new@example.com"}))
    fold(profile, delivery_event(rep))
    assert not bounced(profile, "email")
    fold(profile, _event("customer.updated", {"email": "Gone@Example.com"}))
    assert bounced(profile, "email")  # the address that bounced, whatever its case


def test_old_states_with_one_bounce_mark_still_read() -> None:
    state = CustomerState.from_dict({"customer_id": "c1", "profile": {
        "email": "a@example.com", "bounced": {"email": address_digest("a@example.com")}}})
    assert bounced(state.profile, "email")


def _event(etype: str, props: dict[str, Any]) -> Any:
    from omnijourney.core.events import Event

    return Event("e-" + etype, etype, "c1", datetime(2026, 3, 2, tzinfo=UTC), None, props)


# ----------------------------------------------------------------------- tokens


def _post(port: int, path: str, form: dict[str, str],
          headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body=urllib.parse.urlencode(form),
                     headers={"Content-Type": "application/x-www-form-urlencoded",
                              **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_each_endpoint_takes_only_its_own_tokens_and_only_unexpired() -> None:
    reports: list[DeliveryReport] = []
    cmd = command()
    clock = {"now": cmd.send_at + timedelta(days=1)}
    server = ClickServer("k", reports.append, now=lambda: clock["now"]).start()
    try:
        click = make_token("k", cmd, "https://shop.example/x")
        # A forwarded newsletter's click link can neither unsubscribe nor report a bounce.
        assert _post(server.port, f"/u/{click}", {"List-Unsubscribe": "One-Click"}) == 400
        assert _post(server.port, f"/s/{click}", {"MessageStatus": "bounced"}) == 400
        unsubscribe = make_token("k", cmd, "", UNSUBSCRIBE)
        assert _post(server.port, f"/s/{unsubscribe}", {"MessageStatus": "bounced"}) == 400
        assert reports == []
        status = make_token("k", cmd, "", STATUS)
        clock["now"] = cmd.send_at + timedelta(days=8)  # past a status token's week
        assert _post(server.port, f"/s/{status}", {"MessageStatus": "delivered"}) == 400
        assert _post(server.port, f"/u/{unsubscribe}", {"List-Unsubscribe": "One-Click"}) \
            == 200  # an unsubscribe link lasts a year
    finally:
        server.stop()
    assert [r.status for r in reports] == ["unsubscribed"]
    assert server.counts == {"refused_unsubscribe": 1, "refused_status": 3}


def test_status_callbacks_must_carry_the_providers_signature() -> None:
    reports: list[DeliveryReport] = []
    server = ClickServer("k", reports.append, provider_token="auth",
                         public_url="https://t.example").start()
    try:
        path = f"/s/{make_token('k', replace(command(), to='+15550100'), '', STATUS)}"
        form = {"MessageSid": "SM1", "MessageStatus": "delivered"}
        good = twilio_signature("auth", f"https://t.example{path}",
                                {k: [v] for k, v in form.items()})
        assert _post(server.port, path, form) == 403
        assert _post(server.port, path, form, {"X-Twilio-Signature": "AAAA"}) == 403
        assert _post(server.port, path, form, {"X-Twilio-Signature": good}) == 204
    finally:
        server.stop()
    (rep,) = reports
    assert rep.status == "delivered"
    assert rep.address_digest == address_digest("+15550100")


def test_a_bounce_token_of_another_purpose_is_unattributed() -> None:
    mail = EmailChannel(tracking_secret=SECRET).build(command(to="gone@example.com"))
    headers = mail.as_string().split("\n\n", 1)[0]
    click = make_token(SECRET, command(), "https://x.example")
    forged = headers.replace(mail["X-Omnijourney-Report"], click)
    assert read_bounce(dsn(returned=forged), SECRET)[0] == "unattributed"
    late = command().send_at + timedelta(days=31)
    assert read_bounce(dsn(returned=headers), SECRET, late)[0] == "unattributed"
    assert read_bounce(dsn(returned=headers), SECRET)[0] == "bounced"
    assert make_token(SECRET, command(), "", REPORT) != click


# ------------------------------------------------------------------ servers


def test_a_held_connection_times_out_and_connections_are_bounded() -> None:
    server = ClickServer("k", lambda r: None).start()
    server.server.slots = threading.BoundedSemaphore(2)
    try:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
        third = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        assert third.recv(100).startswith(b"HTTP/1.1 503")
        third.close()
        for s in held:  # the server hangs up on a silent client (10 s socket timeout)
            s.settimeout(15)
            assert s.recv(100) == b""
            s.close()
    finally:
        server.stop()
    assert server.host == "127.0.0.1"


# -------------------------------------------------------------------- privacy


def test_digests_and_scrubbing_never_keep_an_address() -> None:
    assert digest("Ana@Example.com") == digest("ana@example.com")
    assert "ana" not in digest("ana@example.com")
    text = scrub("550 5.1.1 <ana@example.com>: no; To +1 555 010 0199 refused (code 21211)")
    assert text is not None
    assert "ana@example.com" not in text and "555 010 0199" not in text
    assert "21211" in text and "550 5.1.1" in text
    with pytest.raises(InvalidAddress) as caught:
        email_address("ana@example.com, victim@example.org")
    assert "victim" not in str(caught.value)


def test_a_redirect_target_with_line_breaks_is_refused_not_sent_as_a_header() -> None:
    token = make_token("k", command(), "https://shop.example/x\r\nSet-Cookie: a=b")
    (resp,), reports, counts = clicked(f"/c/{token}")
    assert resp.status == 400 and resp.getheader("Set-Cookie") is None
    assert reports == [] and counts == {"refused_click": 1}
    # Links with line breaks in an HTML body are not wrapped into tokens either.
    html = '<a href="https://shop.example/x\r\ny">x</a>'
    assert track(html, command(), "https://t.example", "k", html=True) == html
