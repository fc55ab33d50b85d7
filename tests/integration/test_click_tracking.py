"""A click on a tracked link in a real email ends the cart journey's wait_for; one click on
its List-Unsubscribe revokes email consent."""

from __future__ import annotations

import dataclasses
import http.client
import re
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from omnijourney.adapters.email import EmailChannel
from omnijourney.adapters.runner import Runner
from omnijourney.codecs import encode_delivery
from omnijourney.core.events import Event
from omnijourney.tracking.clicks import ClickServer
from tests.integration.conftest import Kafka
from tests.integration.harness import LiveEngine
from tests.smtp import SmtpServer

pytestmark = pytest.mark.integration
SLOT = "cart_abandonment#cart-z"


def wait_for_state(engine: LiveEngine, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = engine.state_of("c-click", timeout=2)
        if st is not None and predicate(st):
            return st
        time.sleep(1)
    raise AssertionError(f"state never matched: {engine.state_of('c-click')}\n{engine.log()}")


def cart_timeline(email: str, name: str) -> list[Event]:
    """A sign-up three hours ago and a cart two hours ago: its reminder is due."""
    now = datetime.now(UTC).replace(microsecond=0)
    return [
        Event(f"{name}-1", "customer.signed_up", "c-click", now - timedelta(hours=3), "web",
              {"email": email, "email_opt_in": True, "first_name": name,
               # Open all day: the test must not depend on the hour it runs at.
               "contact_window": "00:00-23:59"}),
        Event(f"{name}-2", "cart.item_added", "c-click", now - timedelta(hours=2), "web",
              {"cart_id": "cart-z", "product_name": "Lamp"}),
    ]


def follow(mail: Any, content_type: str, pattern: str, what: str
           ) -> tuple[http.client.HTTPConnection, urllib.parse.SplitResult,
                      http.client.HTTPResponse]:
    """GET the link ``pattern`` finds in the mail's ``content_type`` part, as a reader's
    click does: the connection (to go on with), the URL and the response."""
    part = next(p for p in mail.walk() if p.get_content_type() == content_type)
    link = re.search(pattern, part.get_payload(decode=True).decode())
    assert link, what
    url = urllib.parse.urlsplit(link.group(1))
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    conn.request("GET", url.path)
    return conn, url, conn.getresponse()


def mail_the_reminder(engine: LiveEngine, events: list[Event], channel: EmailChannel,
                      adapter: str) -> list[Any]:
    """Feed the timeline, wait until the cart run waits for a click (its reminder is
    due), and deliver the commands over SMTP to a local server: the mails sent."""
    engine.start()
    engine.produce(events)
    # The 1h wait is long over: the reminder goes out, then the run waits for a click.
    state = wait_for_state(engine, lambda s: s["instances"].get(SLOT, {}).get("status")
                           == "wait_for")
    assert state["instances"][SLOT]["step"] == "wait_for_click"
    with SmtpServer() as smtp:
        channel.port = smtp.port
        runner = Runner(dataclasses.replace(engine.settings, app_id=adapter), channel)
        try:
            runner.run(idle_exit=3.0)
        finally:
            runner.close()
    return list(smtp.messages)


def test_a_tracked_click_ends_the_wait_for(kafka: Kafka, tmp_path: Path) -> None:
    engine = LiveEngine(kafka.bootstrap, tmp_path, clock="wall")
    events = cart_timeline("click@example.com", "Kim")
    producer = KafkaProducer(**engine.settings.kafka_python())
    clicks = ClickServer("s3cret", lambda rep: producer.send(
        engine.settings.topics.deliveries, key=rep.customer_id.encode(),
        value=encode_delivery(rep)).get(10)).start()
    try:
        channel = EmailChannel(tracking_url=f"http://127.0.0.1:{clicks.port}",
                               tracking_secret="s3cret")
        mails = mail_the_reminder(engine, events, channel, "click-adapter")
        (mail,) = [m for m in mails if m["To"] == "click@example.com"
                   and "cart" in m["X-Omnijourney-Journey"]]
        conn, _, resp = follow(mail, "text/html", r'href="(http://127\.0\.0\.1:\d+/c/[^"]+)"',
                               "the reminder has a tracked link")
        assert resp.status == 302
        assert resp.getheader("Location") == "https://shop.example/cart/cart-z"
        conn.close()
        # The click comes back as email.clicked and ends this cart's run.
        wait_for_state(engine, lambda s: SLOT not in s["instances"])
        # One click on the mail's List-Unsubscribe revokes email consent (RFC 8058 POST).
        unsub = urllib.parse.urlsplit(mail["List-Unsubscribe"].strip("<>"))
        conn = http.client.HTTPConnection(unsub.hostname, unsub.port, timeout=5)
        conn.request("POST", unsub.path, body="List-Unsubscribe=One-Click",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert conn.getresponse().status == 200
        conn.close()
        state = wait_for_state(engine, lambda s: s["profile"].get("consent", {}).get("email")
                               is False)
        assert state["profile"]["consent"]["email"] is False
    finally:
        clicks.stop()
        producer.close()
        engine.stop()


def test_the_preference_link_in_a_real_email_changes_the_profile(kafka: Kafka,
                                                                  tmp_path: Path) -> None:
    """The cart reminder goes out over SMTP with its "Manage your preferences" link; the
    customer opens it, unsubscribes from promotions and picks another window; the saved
    event reaches the engine through Kafka and the profile says so."""
    from omnijourney.codecs import encode_event
    from omnijourney.config import load
    from omnijourney.tracking.preferences import PreferencePages

    engine = LiveEngine(kafka.bootstrap, tmp_path, clock="wall")
    events = cart_timeline("prefs@example.com", "Pat")
    producer = KafkaProducer(**engine.settings.kafka_python())
    js = load(engine.settings.journeys).journey_set
    assert js is not None
    pages = PreferencePages("s3cret", js.policies, lambda ev: producer.send(
        engine.settings.topics.touchpoints, key=ev.customer_id.encode(),
        value=encode_event(ev)).get(10), wall=lambda: datetime.now(UTC))
    server = ClickServer("s3cret", lambda rep: None, preferences=pages).start()
    try:
        channel = EmailChannel(tracking_url=f"http://127.0.0.1:{server.port}",
                               tracking_secret="s3cret")
        mails = mail_the_reminder(engine, events, channel, "prefs-adapter")
        (mail,) = [m for m in mails if "cart" in m["X-Omnijourney-Journey"]]
        conn, url, resp = follow(mail, "text/plain", r"Manage your preferences: (http://\S+)",
                                 "the reminder links to the preference page")
        page = resp.read().decode()
        form = re.search(r'name="form" value="([^"]+)"', page)
        assert form, page
        body = urllib.parse.urlencode([
            ("form", form.group(1)), ("channel", "email"), ("topic", "order_updates"),
            ("window_from", "08:00"), ("window_to", "20:00"), ("timezone", "Europe/Berlin"),
            ("action", "save")])
        conn.request("POST", url.path, body=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert conn.getresponse().status == 200
        conn.close()
        state = wait_for_state(engine, lambda s: s["profile"].get("subscriptions", {})
                               .get("promotions") is False)
        assert (state["profile"]["contact_window"], state["profile"]["timezone"]) == (
            "08:00-20:00", "Europe/Berlin")
    finally:
        server.stop()
        producer.close()
        engine.stop()


def test_the_tracking_server_process_publishes_preferences_and_helpdesk_answers(
        kafka: Kafka, tmp_path: Path) -> None:
    """``omnijourney clicks`` as an operator runs it: a preference saved on its page and a
    helpdesk's answer to a hand-off land on ``touchpoints`` as Avro events."""
    import json
    import socket
    import subprocess
    import sys

    from omnijourney.core.commands import ChannelCommand
    from omnijourney.tracking.preferences import preferences_link
    from omnijourney.tracking.tokens import HANDOFF, make_token
    from tests.integration.harness import REPO

    engine = LiveEngine(kafka.bootstrap, tmp_path, clock="wall")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**engine.env(), "CLICK_SECRET": "s3cret"}
    log = (tmp_path / "clicks.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "omnijourney", "clicks", "--port",
                               str(port)], env=env, cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, \
                    (tmp_path / "clicks.log").read_text()
                time.sleep(0.2)
        link = urllib.parse.urlsplit(preferences_link(base, "s3cret", "c-pat", "en",
                                                      datetime.now(UTC)))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", link.path)
        page = conn.getresponse().read().decode()
        form = re.search(r'name="form" value="([^"]+)"', page)
        assert form, page
        conn.request("POST", link.path, body=urllib.parse.urlencode(
            [("form", form.group(1)), ("action", "unsubscribe_all")]),
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        saved = conn.getresponse()
        assert saved.status == 200 and b"unsubscribed" in saved.read()
        now = datetime.now(UTC)
        cmd = ChannelCommand("cmd-1", "support_callback", "1", "book_callback", "webhook",
                             "c-pat", now, now + timedelta(hours=1), None,
                             "https://helpdesk.example", {}, True, "e-1", "", None)
        conn.request("POST", f"/h/{make_token('s3cret', cmd, '', HANDOFF)}",
                     body=json.dumps({"event": "callback.completed", "agent": "Sam"}),
                     headers={"Content-Type": "application/json"})
        assert conn.getresponse().status == 204
        conn.close()
        got = engine.read([engine.settings.topics.touchpoints], until=2)
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    events = sorted(got, key=lambda e: e["type"])  # Avro records, as decoded
    assert [(e["type"], e["customer_id"]) for e in events] == [
        ("callback.completed", "c-pat"), ("preferences.updated", "c-pat")]
    assert json.loads(events[1]["properties"]) == {"unsubscribe_all": True}
    assert json.loads(events[0]["properties"])["agent"] == "Sam"
