"""Tracked links: signed, rewritten in emails, reported and redirected by a real server."""

from __future__ import annotations

import http.client
from typing import Any

from omnijourney.adapters.clicks import ClickServer, make_token, read_token, track
from omnijourney.adapters.email import EmailChannel
from tests.unit.test_email_channel import command


def test_tokens_are_signed() -> None:
    cmd = command()
    token = make_token("k", cmd, "https://shop.example/cart/k1")
    assert read_token("k", token) == {"c": cmd["command_id"], "cu": "c1",
                                      "j": "cart_abandonment", "k": "k1",
                                      "u": "https://shop.example/cart/k1"}
    assert read_token("other", token) is None
    payload, _, sig = token.partition(".")
    assert read_token("k", payload[:-2] + "xx." + sig) is None


def test_links_in_marketing_email_are_tracked_but_not_in_receipts() -> None:
    channel = EmailChannel(tracking_url="https://t.example", tracking_secret="k")
    cmd = command(content={"subject": "s", "text": "Go: https://shop.example/cart/k1 now",
                           "html": '<a href="https://shop.example/cart/k1">cart</a>'})
    parts = {p.get_content_type(): p.get_content() for p in channel.build(cmd).iter_parts()}
    assert "https://t.example/c/" in parts["text/plain"]
    assert "https://shop.example" not in parts["text/plain"]
    assert 'href="https://t.example/c/' in parts["text/html"]
    receipt = channel.build(dict(cmd, transactional=True))
    assert "https://shop.example/cart/k1" in str(receipt)
    assert track("no links", cmd, "b", "k", html=False) == "no links"


def test_the_click_server_reports_and_redirects() -> None:
    reports: list[dict[str, Any]] = []
    server = ClickServer("k", reports.append).start()
    try:
        token = make_token("k", command(), "https://shop.example/cart/k1")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", f"/c/{token}")
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("Location")) == (302, "https://shop.example/cart/k1")
        resp.read()
        conn.request("GET", "/c/forged.token")
        bad = conn.getresponse()
        assert bad.status == 400
        bad.read()
        conn.close()
    finally:
        server.stop()
    (rep,) = reports
    assert (rep["status"], rep["channel"], rep["instance_key"]) == ("clicked", "email", "k1")
