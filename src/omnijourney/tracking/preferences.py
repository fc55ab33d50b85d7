"""The customer's own preference page: ``GET /p/<token>`` shows it, ``POST /p/<token>``
saves it as a ``preferences.updated`` event (core/profile.py folds it: channels, topics,
contact window and time zone, or everything unsubscribed).

Reached by a signed link (``preferences_link``) that marketing messages carry: the token
names the customer and their language, signed with HMAC-SHA256, and expires. The page
works without JavaScript (a plain form post), is rendered from a Liquid template with HTML
escaping, per locale (``pages/strings.json``), and sends a strict Content-Security-Policy.
Each page served carries a one-time form token (signed, an hour long): a forged or
tampered link or form is refused, and a form posted twice (a replay) is refused the
second time; should the server have restarted in between, the event's id (from the form
token) is the same, and the engine refuses the repeat too.
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

from liquid import Environment

from omnijourney.core.catalog import Policies
from omnijourney.core.events import Event
from omnijourney.core.profile import PREFERENCES_EVENT
from omnijourney.core.templates import PREFERENCES_MARK
from omnijourney.core.timeutil import ContactWindow, is_known_zone
from omnijourney.tracking.tokens import FORM, PREFERENCES, make_signed, read_token

PAGES = Path(__file__).with_name("pages")
PAGE_CHANNELS = ("email", "sms", "push")  # what a person chooses (ads are audiences)
ZONES = ("UTC", "Europe/London", "Europe/Lisbon", "Europe/Paris", "Europe/Berlin",
         "Europe/Madrid", "Europe/Rome", "Europe/Warsaw", "Europe/Athens", "Europe/Istanbul",
         "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
         "America/Sao_Paulo", "Asia/Dubai", "Asia/Kolkata", "Asia/Singapore", "Asia/Tokyo",
         "Australia/Sydney")
FORM_TTL = 3600.0  # seconds a page's form may be posted
HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                      "form-action 'self'; frame-ancestors 'none'",
           "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-store"}


def preferences_link(base: str, secret: str, customer_id: str, locale: str | None,
                     issued: datetime) -> str:
    """The signed link to a customer's preference page, valid for a year from ``issued``."""
    token = make_signed(secret, PREFERENCES, issued, cu=customer_id,
                        l=(locale or "en").split("-")[0].lower())
    return f"{base.rstrip('/')}/p/{token}"


def fill_link(text: str, link: str) -> str:
    """``{{ links.preferences }}`` as rendered (PREFERENCES_MARK), made the real link."""
    return text.replace(PREFERENCES_MARK, link)


@dataclass(frozen=True)
class PreferenceLinks:
    """How an adapter makes the preference page's link: signed for the customer when the
    tracking server runs (``base`` and its ``secret``), else the shop's own page."""

    base: str | None = None
    secret: str = ""
    fallback: str = "https://shop.example/preferences"

    def link(self, customer_id: str, locale: str | None, issued: datetime) -> str:
        if self.base:
            return preferences_link(self.base, self.secret, customer_id, locale, issued)
        return self.fallback

    def fill(self, text: str, cmd: Any) -> str:
        """``text`` with every mark replaced: never sent with the mark in it."""
        if PREFERENCES_MARK not in text:
            return text
        return fill_link(text, self.link(cmd.customer_id, cmd.locale, cmd.send_at))


def with_preferences(text: str, html: str | None, link: str,
                     locale: str | None) -> tuple[str, str | None]:
    """A message's text and HTML with the preference page's link: where the template
    placed it (``{{ links.preferences }}``), else as a last line."""
    if PREFERENCES_MARK in text or (html and PREFERENCES_MARK in html):
        return fill_link(text, link), fill_link(html, escape(link)) if html else html
    lang = (locale or "en").split("-")[0].lower()
    words = _strings().get(lang, _strings()["en"])["manage"]
    text = f"{text.rstrip()}\n\n{words}: {link}\n"
    if html:
        footer = (f'<p style="font-size:12px;color:#566173"><a href="{escape(link)}">'
                  f"{escape(words)}</a></p>")
        at = html.lower().rfind("</body>")
        html = html[:at] + footer + html[at:] if at >= 0 else html + footer
    return text, html


@dataclass(frozen=True)
class Reply:
    status: int
    html: bytes


@cache
def _template() -> Any:
    env = Environment(autoescape=True)
    return env.from_string((PAGES / "preferences.html.liquid").read_text(encoding="utf-8"))


@cache
def _message_page() -> Any:
    return Environment(autoescape=True).from_string(
        '<!doctype html><html lang="{{ lang }}"><meta charset="utf-8">'
        "<title>{{ text }}</title><p>{{ text }}</p></html>")


@cache
def _strings() -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads(
        (PAGES / "strings.json").read_text(encoding="utf-8"))
    return data


class PreferencePages:
    """What ``/p/`` answers; the tracking server (tracking/clicks.py) routes to it."""

    def __init__(self, secret: str, policies: Policies, emit: Callable[[Event], None], *,
                 wall: Callable[[], datetime], check_expiry: bool = True) -> None:
        self.secret, self.policies, self.emit, self.wall = secret, policies, emit, wall
        self.check_expiry = check_expiry
        self._used: dict[str, float] = {}  # form nonce -> when it stops mattering
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- pages
    def show(self, token: str, saved: str | None = None) -> Reply:
        link = self._link(token)
        if link is None:
            return self._refused(None)
        now = self.wall()
        form = make_signed(self.secret, FORM, now, cu=link["cu"], n=secrets.token_hex(16),
                           ttl=FORM_TTL)
        lang = self._lang(link)
        t = _strings()[lang]
        pol = self.policies
        window = pol.contact_window
        html = _template().render(
            lang=lang, t=t, saved=saved, action=f"/p/{token}", form_token=form,
            channels=[{"name": ch, "label": t[f"channel_{ch}"], "on": True}
                      for ch in PAGE_CHANNELS],
            topics=[{"name": name, "label": t.get(f"topic_{name}") or name.replace("_", " "),
                     "on": default == "opt_out"}
                    for name, (_, default) in sorted(pol.topics.items())],
            hours=[f"{h:02d}:00" for h in range(24)],
            window_from=window.start.strftime("%H:%M"),
            window_to=window.end.strftime("%H:%M"),
            zones=list(dict.fromkeys([pol.timezone.key, *ZONES])),
            timezone=pol.timezone.key)
        return Reply(200, html.encode())

    def save(self, token: str, form: dict[str, list[str]]) -> Reply:
        link = self._link(token)
        if link is None:
            return self._refused(None)
        lang = self._lang(link)
        signed = (form.get("form") or [""])[0]
        data = read_token(self.secret, signed, FORM, self.wall() if self.check_expiry else None)
        if data is None or data.get("cu") != link["cu"]:
            return self._refused(lang)
        nonce = str(data.get("n") or "")
        if not self._first_use(nonce, float(data.get("x") or 0)):
            return Reply(409, self._message(lang, "replayed"))
        props = self._choices(form)
        if props is None:
            return Reply(400, self._message(lang, "refused"))
        self.emit(Event(f"preferences:{nonce}", PREFERENCES_EVENT, str(link["cu"]),
                        self.wall(), "preferences", props))
        return self.show(token, _strings()[lang][
            "unsubscribed" if props.get("unsubscribe_all") else "saved"])

    # --------------------------------------------------------------- helpers
    def _choices(self, form: dict[str, list[str]]) -> dict[str, Any] | None:
        """The event's properties from the form; None for a form no page of ours makes."""
        if (form.get("action") or ["save"])[0] == "unsubscribe_all":
            return {"unsubscribe_all": True}
        chosen = set(form.get("channel", []))
        topics = set(form.get("topic", []))
        if not chosen <= set(PAGE_CHANNELS) or not topics <= set(self.policies.topics):
            return None
        start, end = (form.get("window_from") or [""])[0], (form.get("window_to") or [""])[0]
        zone = (form.get("timezone") or [""])[0]
        try:
            window = ContactWindow.parse(f"{start}-{end}")
        except ValueError:
            return None
        if not is_known_zone(zone):
            return None
        return {"channels": {ch: ch in chosen for ch in PAGE_CHANNELS},
                "topics": {name: name in topics for name in sorted(self.policies.topics)},
                "contact_window": str(window), "timezone": zone}

    def _link(self, token: str) -> dict[str, Any] | None:
        data = read_token(self.secret, urllib.parse.unquote(token), PREFERENCES,
                          self.wall() if self.check_expiry else None)
        if data is None or not isinstance(data.get("cu"), str) or not data["cu"]:
            return None
        return data

    def _lang(self, link: dict[str, Any] | None) -> str:
        lang = str((link or {}).get("l") or "en")
        return lang if lang in _strings() else "en"

    def _first_use(self, nonce: str, expires: float) -> bool:
        now = self.wall().timestamp()
        with self._lock:
            for old, until in list(self._used.items()):
                if until < now:
                    del self._used[old]
            if not nonce or nonce in self._used:
                return False
            self._used[nonce] = max(expires, now + FORM_TTL)
            return True

    def _refused(self, lang: str | None) -> Reply:
        return Reply(403, self._message(lang or "en", "refused"))

    @staticmethod
    def _message(lang: str, key: str) -> bytes:
        return str(_message_page().render(lang=lang, text=_strings()[lang][key])).encode()
