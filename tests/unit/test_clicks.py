"""Tracked links: signed, rewritten in emails, reported and redirected by a real server."""

from __future__ import annotations

import email
import http.client
import urllib.parse
from dataclasses import replace
from datetime import timedelta

from omnijourney.adapters.email import EmailChannel
from omnijourney.adapters.sms import TwilioStyleSms
from omnijourney.core.commands import DeliveryReport
from omnijourney.core.events import delivery_event
from omnijourney.core.profile import address_digest
from omnijourney.tracking.clicks import ClickServer
from omnijourney.tracking.tokens import (
    CLICK,
    REPORT,
    STATUS,
    TOKEN_TTL,
    UNSUBSCRIBE,
    make_token,
    read_token,
    track,
)
from tests.provider import Provider
from tests.unit.test_email_channel import command


def test_tokens_are_signed() -> None:
    cmd = command()
    token = make_token("k", cmd, "https://shop.example/cart/k1")
    expires = int((cmd.send_at + TOKEN_TTL[CLICK]).timestamp())
    assert read_token("k", token, CLICK) == {"p": "c", "x": expires, "c": cmd.command_id,
                                             "cu": "c1", "j": "cart_abandonment", "k": "k1",
                                             "ch": "email",
                                             "u": "https://shop.example/cart/k1"}
    assert read_token("other", token, CLICK) is None
    payload, _, sig = token.partition(".")
    assert read_token("k", payload[:-2] + "xx." + sig, CLICK) is None


def test_a_token_serves_only_its_purpose_and_only_until_it_expires() -> None:
    cmd = command()
    click = make_token("k", cmd, "https://shop.example/cart/k1", CLICK)
    for other in (UNSUBSCRIBE, STATUS, REPORT):
        assert read_token("k", click, other) is None
    sent = cmd.send_at
    assert read_token("k", click, CLICK, sent + timedelta(days=89)) is not None
    assert read_token("k", click, CLICK, sent + timedelta(days=91)) is None
    status = make_token("k", replace(cmd, to="+15550100"), "", STATUS)
    assert read_token("k", status, STATUS)["a"] == address_digest("+15550100")  # type: ignore[index]


def test_links_in_marketing_email_are_tracked_but_not_in_receipts() -> None:
    channel = EmailChannel(tracking_url="https://t.example", tracking_secret="k")
    cmd = command(content={"subject": "s", "text": "Go: https://shop.example/cart/k1 now",
                           "html": '<a href="https://shop.example/cart/k1">cart</a>'})
    parts = {p.get_content_type(): p.get_content() for p in channel.build(cmd).iter_parts()}
    assert "https://t.example/c/" in parts["text/plain"]
    assert "https://shop.example" not in parts["text/plain"]
    assert 'href="https://t.example/c/' in parts["text/html"]
    receipt = channel.build(replace(cmd, transactional=True))
    assert "https://shop.example/cart/k1" in str(receipt)
    assert track("no links", cmd, "b", "k", html=False) == "no links"


def clicked(*paths: str) -> tuple[list[http.client.HTTPResponse], list[DeliveryReport],
                                  dict[str, int]]:
    """GET each path from a click server of its own: the responses (read), what it
    reported, and what it counted."""
    reports: list[DeliveryReport] = []
    server = ClickServer("k", reports.append).start()
    answers = []
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for path in paths:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            answers.append(resp)
        conn.close()
    finally:
        server.stop()
    return answers, reports, server.counts


def test_the_click_server_reports_and_redirects() -> None:
    token = make_token("k", command(), "https://shop.example/cart/k1")
    (resp, bad), reports, _ = clicked(f"/c/{token}", "/c/forged.token")
    assert (resp.status, resp.getheader("Location")) == (302, "https://shop.example/cart/k1")
    assert bad.status == 400
    (rep,) = reports
    assert (rep.status, rep.channel, rep.instance_key) == ("clicked", "email", "k1")


def test_sms_status_callbacks_come_back_as_delivery_reports() -> None:
    reports: list[DeliveryReport] = []
    server = ClickServer("k", reports.append).start()
    base = f"http://127.0.0.1:{server.port}"
    cmd = replace(command(), channel="sms", to="+15550100", content={"text": "Hi"})
    try:
        with Provider() as provider:
            TwilioStyleSms(provider.url, "AC1", "t", "+15550000", status_callback=base,
                           callback_secret="k").deliver(cmd)
        (req,) = provider.requests
        callback = urllib.parse.parse_qs(req.body.decode())["StatusCallback"][0]
        assert callback.startswith(f"{base}/s/")
        path = urllib.parse.urlsplit(callback).path
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for form in ({"MessageSid": "SM9", "MessageStatus": "sent"},  # already known
                     {"MessageSid": "SM9", "MessageStatus": "delivered"},
                     {"MessageSid": "SM9", "MessageStatus": "undelivered",
                      "ErrorCode": "30003"}):
            conn.request("POST", path, body=urllib.parse.urlencode(form),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 204
        conn.request("POST", "/s/forged.token", body="MessageStatus=delivered")
        forged = conn.getresponse()
        forged.read()
        assert forged.status == 400
        conn.close()
    finally:
        server.stop()
    assert [(r.status, r.channel, r.provider_id) for r in reports] == [
        ("delivered", "sms", "SM9"), ("failed", "sms", "SM9")]
    assert reports[1].reason == "provider status undelivered (error 30003)"
    assert {r.command_id for r in reports} == {cmd.command_id}
    # The engine reads them as sms.delivered / sms.failed for the same journey instance.
    events = [delivery_event(r, None) for r in reports]
    assert [e.type for e in events] == ["sms.delivered", "sms.failed"]


def test_one_click_unsubscribe_reports_on_post_only() -> None:
    reports: list[DeliveryReport] = []
    server = ClickServer("k", reports.append).start()
    base = f"http://127.0.0.1:{server.port}"
    cmd = command()
    mail = EmailChannel(tracking_url=base, tracking_secret="k").build(cmd)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = mail["List-Unsubscribe"].strip("<>")
    assert url.startswith(f"{base}/u/")
    # On the wire too: a mail client reads the URL as is (no RFC 2047 encoded words).
    wire = email.message_from_bytes(mail.as_bytes())
    assert wire["List-Unsubscribe"] == f"<{url}>"
    receipt = EmailChannel(tracking_url=base, tracking_secret="k").build(
        replace(cmd, transactional=True))
    assert receipt["List-Unsubscribe"] is None  # receipts are not marketing
    path = urllib.parse.urlsplit(url).path
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", path)  # a link scanner, or a person before the button
        page = conn.getresponse()
        assert page.status == 200 and b'method="post"' in page.read()
        assert reports == []
        conn.request("POST", path, body="List-Unsubscribe=One-Click",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        done = conn.getresponse()
        assert done.status == 200 and b"unsubscribed" in done.read()
        conn.request("POST", "/u/forged.token", body="List-Unsubscribe=One-Click")
        forged = conn.getresponse()
        forged.read()
        assert forged.status == 400
    finally:
        conn.close()
        server.stop()
    (rep,) = reports
    assert (rep.status, rep.channel, rep.command_id) == (
        "unsubscribed", "email", cmd.command_id)
    assert delivery_event(rep, None).type == "email.unsubscribed"
