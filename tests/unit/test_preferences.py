"""Subscription topics, the preferences event, and the preference page over plain HTTP
(a real server on loopback; the browser test is tests/e2e/test_preference_page.py)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from omnijourney.config import load
from omnijourney.core import evaluate
from omnijourney.core.events import Event
from omnijourney.core.trace import TraceKind
from omnijourney.tracking.clicks import ClickServer
from omnijourney.tracking.preferences import PreferencePages, preferences_link
from tests.helpers import ev, t

REPO = Path(__file__).resolve().parents[2]
SECRET = "preference-secret"
NOW = datetime(2026, 3, 21, 9, 0, tzinfo=UTC)


def journeys():  # type: ignore[no-untyped-def]
    js = load(REPO / "journeys").journey_set
    assert js is not None
    return js


class Page:
    def __init__(self) -> None:
        self.saved: list[Event] = []
        self.now = NOW
        pages = PreferencePages(SECRET, journeys().policies, self.saved.append,
                                wall=lambda: self.now)
        self.server = ClickServer(SECRET, lambda r: None, preferences=pages).start()
        self.base = f"http://127.0.0.1:{self.server.port}"

    def link(self, customer: str = "c-ana", locale: str | None = "en") -> str:
        return preferences_link(self.base, SECRET, customer, locale, NOW)

    @staticmethod
    def get(url: str) -> tuple[int, str, dict[str, str]]:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    @staticmethod
    def post(url: str, fields: list[tuple[str, str]]) -> tuple[int, str]:
        data = urllib.parse.urlencode(fields).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data), timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


@pytest.fixture
def page() -> Iterator[Page]:
    p = Page()
    yield p
    p.server.stop()


def form_token(html: str) -> str:
    found = re.search(r'name="form" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


CHOICES = [("channel", "email"), ("channel", "push"), ("topic", "newsletter"),
           ("topic", "order_updates"), ("window_from", "10:00"), ("window_to", "18:00"),
           ("timezone", "Europe/Paris"), ("action", "save")]


def test_the_page_saves_the_customers_choices_as_one_event(page: Page) -> None:
    status, html, headers = page.get(page.link())
    assert status == 200 and "Your message preferences" in html
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "<script" not in html  # works without JavaScript: a plain form post
    status, html = page.post(page.link(), [("form", form_token(html)), *CHOICES])
    assert status == 200 and "Saved." in html
    (saved,) = page.saved
    assert (saved.type, saved.customer_id, saved.source) == (
        "preferences.updated", "c-ana", "preferences")
    assert saved.properties == {
        "channels": {"email": True, "sms": False, "push": True},
        "topics": {"newsletter": True, "order_updates": True, "promotions": False},
        "contact_window": "10:00-18:00", "timezone": "Europe/Paris"}
    # Folded into the profile, the choices are what conditions and the gate read.
    js = journeys()
    st = evaluate(js, None, ev("customer.signed_up", "2026-03-21T08:00:00Z", "c-ana",
                               email="a@x.io", email_opt_in=True, sms_opt_in=True),
                  t("2026-03-21T08:00:00Z")).state
    st = evaluate(js, st, saved, saved.occurred_at).state
    assert st.profile["consent"] == {"email": True, "sms": False, "push": True}
    assert st.profile["subscriptions"]["promotions"] is False
    assert (st.profile["contact_window"], st.profile["timezone"]) == ("10:00-18:00",
                                                                      "Europe/Paris")


def test_unsubscribe_from_everything_and_the_page_in_german(page: Page) -> None:
    status, html, _ = page.get(page.link("c-ben", "de-AT"))
    assert status == 200 and 'lang="de"' in html and "Von allem abmelden" in html
    status, html = page.post(page.link("c-ben", "de-AT"),
                             [("form", form_token(html)), ("action", "unsubscribe_all")])
    assert status == 200 and "abgemeldet" in html
    assert page.saved[0].properties == {"unsubscribe_all": True}


def test_forged_tampered_expired_and_replayed_links_are_refused(page: Page) -> None:
    link = page.link()
    _, html, _ = page.get(link)
    form = form_token(html)
    payload, _, sig = link.rsplit("/", 1)[1].partition(".")
    forged = preferences_link(page.base, "not-the-secret", "c-ana", "en", NOW)
    tampered = f"{page.base}/p/{payload[:-2]}xx.{sig}"
    for bad in (forged, tampered, f"{page.base}/p/", f"{page.base}/p/%00%ff"):
        assert page.get(bad)[0] == 403
        assert page.post(bad, [("form", form), *CHOICES])[0] == 403
    # A form served for another customer cannot save this one's choices.
    _, other, _ = page.get(page.link("c-eve"))
    assert page.post(link, [("form", form_token(other)), *CHOICES])[0] == 403
    # Posted twice: the second is a replay.
    assert page.post(link, [("form", form), *CHOICES])[0] == 200
    status, html = page.post(link, [("form", form), *CHOICES])
    assert status == 409 and "already saved" in html
    # A form older than its hour, a link older than its year.
    _, html, _ = page.get(link)
    page.now = NOW + timedelta(hours=2)
    assert page.post(link, [("form", form_token(html)), *CHOICES])[0] == 403
    page.now = NOW + timedelta(days=366)
    assert page.get(link)[0] == 403
    assert len(page.saved) == 1


def test_a_hostile_form_is_refused_and_saves_nothing(page: Page) -> None:
    link = page.link()
    for extra in ([("topic", "<script>alert(1)</script>")], [("channel", "fax")],
                  [("timezone", "Mars/Olympus")], [("window_from", "25:00")],
                  [("window_to", "10:00")]):  # from 10:00 until 10:00: an empty window
        _, html, _ = page.get(link)
        fields = [(k, v) for k, v in CHOICES if k not in {k2 for k2, _ in extra}]
        status, body = page.post(link, [("form", form_token(html)), *fields, *extra])
        assert status == 400, extra
        assert "<script>" not in body
    assert page.post(link, [("form", "x" * 20000)])[0] == 413  # over the form limit
    assert page.saved == []


def test_an_opt_in_topic_needs_a_subscription_and_sends_name_known_topics(
        tmp_path: Path) -> None:
    js = journeys()
    assert js.policies.topics["newsletter"] == (frozenset({"email"}), "opt_in")
    root = tmp_path / "journeys"
    root.mkdir()
    (root / "templates").mkdir()
    for f in (REPO / "journeys" / "templates").iterdir():
        (root / "templates" / f.name).write_text(f.read_text())
    (root / "policies.yaml").write_text((REPO / "journeys" / "policies.yaml").read_text())
    (root / "news.yaml").write_text(
        "name: News\nversion: 1\ntrigger:\n  event: customer.updated\n"
        "entry:\n  re_entry: always\nsteps:\n"
        "  - id: letter\n    type: send\n    channel: email\n    template: welcome_followup\n"
        "    topic: newsletter\n    data:\n      discount_code: NEWS-1\n")
    news = load(root).journey_set
    assert news is not None
    at = t("2026-03-21T10:00:00Z")
    st = evaluate(news, None, ev("customer.signed_up", "2026-03-21T09:00:00Z", "c-1",
                                 email="a@x.io", email_opt_in=True, first_name="A"), at).state
    out = evaluate(news, st, ev("customer.updated", "2026-03-21T10:00:00Z", "c-1"), at)
    assert not out.commands
    assert [x.detail.get("reason") for x in out.trace if x.kind == TraceKind.SUPPRESSED] == [
        "no_topic_consent"]
    st = evaluate(news, out.state, ev("preferences.updated", "2026-03-21T10:01:00Z", "c-1",
                                      topics={"newsletter": True}), at).state
    again = evaluate(news, st, ev("customer.updated", "2026-03-21T10:02:00Z", "c-1"),
                     t("2026-03-21T10:02:00Z"))
    assert [c.step for c in again.commands] == ["letter"]
    # A send naming a topic the policies lack, or one not sent on its channel.
    (root / "news.yaml").write_text(
        (root / "news.yaml").read_text().replace("topic: newsletter", "topic: newsleter"))
    (root / "sms.yaml").write_text(
        "name: Sms\nversion: 1\ntrigger:\n  event: customer.updated\nsteps:\n"
        "  - id: text\n    type: send\n    channel: sms\n    template: welcome_sms\n"
        "    topic: newsletter\n")
    problems = {(Path(v.file).name, v.line, v.message) for v in load(root).violations}
    assert ("news.yaml", 12, "unknown topic 'newsleter'") in problems
    assert ("sms.yaml", 10, "topic 'newsletter' is not sent on sms (its channels: email)") \
        in problems


def test_every_marketing_email_links_to_the_customers_own_page(page: Page) -> None:
    from omnijourney.adapters.email import EmailChannel
    from tests.unit.test_email_channel import command

    channel = EmailChannel(tracking_url=page.base, tracking_secret=SECRET)
    mail = channel.build(command(locale="de-DE"))
    text = mail.get_body(("plain",)).get_content()
    link = re.search(r"Einstellungen verwalten: (\S+)", text)
    assert link, text
    status, html, _ = page.get(link.group(1))
    assert status == 200 and 'lang="de"' in html
    assert page.link("c1")[:20] == link.group(1)[:20]
    body = mail.get_body(("html",)).get_content()
    assert "Einstellungen verwalten</a>" in body
    # Not in service mail (transactional): nothing to choose there.
    service = channel.build(command(transactional=True))
    assert "/p/" not in service.get_body(("plain",)).get_content()


def test_links_preferences_becomes_the_signed_link_on_every_channel(page: Page) -> None:
    """A template's ``{{ links.preferences }}``: the core writes a mark (it has no secret
    to sign with), each adapter puts the customer's signed link there; without the
    tracking server, the shop's own page. The mark itself is never sent."""
    from omnijourney.adapters.email import EmailChannel
    from omnijourney.adapters.push import FcmStylePush
    from omnijourney.adapters.sms import TwilioStyleSms
    from omnijourney.core.templates import PREFERENCES_MARK, compile_text
    from omnijourney.tracking.preferences import PreferenceLinks
    from tests.provider import Provider
    from tests.unit.test_email_channel import command

    assert compile_text("Choose: {{ links.preferences }}").render(
        {"links": {"preferences": PREFERENCES_MARK}}) == f"Choose: {PREFERENCES_MARK}"
    links = PreferenceLinks(page.base, SECRET)
    sms_cmd = command(channel="sms", to="+4915112345678",
                      content={"text": f"Your code. Preferences: {PREFERENCES_MARK}"})
    with Provider() as provider:
        sms = TwilioStyleSms(provider.url, "AC1", "tok", "+15550000", links=links)
        assert sms.deliver(sms_cmd).status == "sent"
        push = FcmStylePush(provider.url, "proj", "tok", links=links)
        assert push.deliver(command(channel="push", to="fcm:1", content={
            "title": "Hi", "text": "x", "url": PREFERENCES_MARK})).status == "sent"
        bodies = [r.body.decode() for r in provider.requests]
    body = urllib.parse.parse_qs(bodies[0])["Body"][0]
    assert PREFERENCES_MARK not in body and f"{page.base}/p/" in body
    assert page.get(body.split("Preferences: ")[1])[0] == 200  # the customer's page
    assert f"{page.base}/p/" in json.loads(bodies[1])["message"]["data"]["url"]
    # Email: in the template's own place, then no footer; without tracking, the shop's.
    placed = command(content={"subject": "s", "text": f"See {PREFERENCES_MARK}",
                              "html": f'<a href="{PREFERENCES_MARK}">prefs</a>'})
    mail = EmailChannel(tracking_url=page.base, tracking_secret=SECRET).build(placed)
    text = mail.get_body(("plain",)).get_content()
    assert text.count("/p/") == 1 and "Manage your preferences" not in text
    plain = EmailChannel().build(placed).get_body(("plain",)).get_content()
    assert "https://shop.example/preferences" in plain and PREFERENCES_MARK not in plain
