"""Message content in Liquid, per channel, with locale variants and fallback."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from liquid import Environment, FalsyStrictUndefined
from liquid.exceptions import LiquidError
from liquid.filter import with_context

from omnijourney.core.diagnostics import did_you_mean
from omnijourney.core.plaintext import Part, compile_parts, render_parts, short_hash
from omnijourney.core.timeutil import parse_instant, zone

_LIQUID_DATE = Environment().filters["date"]  # the standard filter, for everything else

# The parts each channel's template must define (email may add ``html``).
REQUIRED_PARTS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "text"),
    "sms": ("text",),
    "push": ("title", "text"),
    "webhook": ("body",),
}
OPTIONAL_PARTS: dict[str, tuple[str, ...]] = {"email": ("html", "preheader"), "push": ("url",)}
TEMPLATE_CHANNELS = tuple(REQUIRED_PARTS)


class TemplateError(ValueError):
    pass


@with_context
def _date(value: Any, fmt: Any, *, context: Any) -> str:
    """Liquid's ``date``, except that ``'now'`` and ``'today'`` are the evaluation's own
    moment (``now`` in the context), never the machine's clock: a replay renders the
    same text, and the core stays a function of its inputs."""
    if value in ("now", "today"):
        value = context.resolve("now")
    return str(_LIQUID_DATE(value, fmt, environment=context.env))


@with_context
def _local_time(value: Any, fmt: Any = "%H:%M", *, context: Any) -> str:
    """``{{ t | local_time: '%H:%M' }}``: an instant (RFC 3339 text or a time) on the
    customer's own clock (``profile.timezone``; UTC without one)."""
    when = value if isinstance(value, datetime) else parse_instant(str(value))
    profile = context.resolve("profile")
    name = profile.get("timezone") if isinstance(profile, dict) else None
    return when.astimezone(zone(name, ZoneInfo("UTC"))).strftime(str(fmt))


def _json(value: Any) -> str:
    """``{{ x | json }}``: the value as a JSON literal (quotes and all), for text bodies."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _make_env(*, html: bool = False) -> Environment:
    # Printing a missing value is an error (the send is skipped with the reason), while
    # ``{% if x %}`` and ``{{ x | default: "there" }}`` work for optional fields.
    # HTML parts escape every value printed into them (a first name of
    # ``<img src=x onerror=…>`` is text, not markup); ``| safe`` marks trusted markup.
    env = Environment(undefined=FalsyStrictUndefined, autoescape=html)
    env.filters["short_hash"] = short_hash
    env.filters["date"] = _date
    env.filters["json"] = _json
    env.filters["local_time"] = _local_time
    return env


ENV = _make_env()
HTML_ENV = _make_env(html=True)
# Parts whose values are escaped as HTML.
HTML_PARTS = frozenset({"html"})


@dataclass(frozen=True, slots=True)
class Text:
    """One compiled Liquid text.

    Most message texts are literal text, plain outputs, ifs and cases (``plain``, see
    core/plaintext.py): those print what they find in the context directly, without a
    Liquid render context (about half of each render's time); anything else is rendered
    by Liquid itself, so the output is Liquid's in every case."""

    source: str
    template: Any
    plain: tuple[Part, ...] | None = None

    def render(self, ctx: dict[str, Any]) -> str:
        if self.plain is not None:
            # HTML texts escape what they print, as their environment says.
            out = render_parts(self.plain, ctx, self.template.env.autoescape)
            if out is not None:
                return out
        try:
            return str(self.template.render(**ctx))
        except LiquidError as exc:
            raise TemplateError(_first_line(exc)) from None


_TEXTS: dict[tuple[str, bool], Text] = {}


def compile_text(source: str, *, html: bool = False) -> Text:
    """Parse once per distinct source; the evaluator calls this on its hot path.
    ``html``: the text is HTML, and every value printed into it is escaped."""
    text = _TEXTS.get((source, html))
    if text is None:
        try:
            template = (HTML_ENV if html else ENV).from_string(str(source))
            text = Text(source, template, compile_parts(template.nodes))
        except LiquidError as exc:
            raise TemplateError(_first_line(exc)) from None
        _TEXTS[(source, html)] = text
    return text


# What templates can see (the evaluator's context), and what a profile holds.
TEMPLATE_NAMES = frozenset({"profile", "event", "last_event", "journey", "now", "data",
                            "links"})
# ``{{ links.preferences }}`` in a message: the customer's own preference page. The core
# cannot sign a link (no secrets in it), so it writes this mark, and the channel's adapter
# puts the signed link in its place when it sends (tracking/preferences.py).
PREFERENCES_MARK = "%%preferences%%"
LINKS = {"preferences": PREFERENCES_MARK}
PROFILE_FIELDS = frozenset({
    "customer_id", "email", "phone", "push_token", "first_name", "last_name", "locale",
    "timezone", "contact_window", "country", "consent", "reachable", "bounced",
    "attributes", "counts", "first_seen_at", "last_seen_at", "signed_up_at", "identifiers",
    "channels", "subscriptions"})


Severity = Literal["error", "warning"]


def static_problems(source: str) -> list[tuple[Severity, str, str | None]]:
    """(severity, message, hint) for names and filters a text uses that nothing provides:
    a filter that does not exist is an error (it fails every render); a name outside the
    context, or a profile field no profile has, a warning (it may be optional)."""
    try:
        analysis = ENV.from_string(str(source)).analyze(include_partials=False)
    except LiquidError:
        return []  # the syntax error is reported on its own
    out: list[tuple[Severity, str, str | None]] = []
    for tag in analysis.tags:
        if tag in ("render", "include"):
            out.append(("error", f"{{% {tag} %}} (partials) is not supported",
                        "write the shared text into each template"))
    for name in analysis.filters:
        if name not in ENV.filters:
            out.append(("error", f"unknown filter '{name}'",
                        did_you_mean(name, list(ENV.filters))))
    for root, uses in analysis.globals.items():
        if root not in TEMPLATE_NAMES:
            out.append(("warning", f"unknown name '{root}'",
                        did_you_mean(root, sorted(TEMPLATE_NAMES))
                        or f"templates see {', '.join(sorted(TEMPLATE_NAMES))}"))
            continue
        if root == "profile":
            for use in uses:
                segments = [str(x) for x in use.segments]
                if len(segments) > 1 and segments[1] not in PROFILE_FIELDS:
                    out.append(("warning", f"the profile has no '{segments[1]}'",
                                did_you_mean(segments[1], sorted(PROFILE_FIELDS))
                                or "custom values live under profile.attributes"))
    return out


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    name: str
    channel: str
    default_locale: str
    locales: dict[str, dict[str, Text]] = field(default_factory=dict)

    def pick_locale(self, wanted: str | None) -> str:
        """Exact locale, then its language (de-AT -> de), then the template's default."""
        if wanted:
            norm = wanted.replace("_", "-")
            for cand in (norm, norm.split("-")[0]):
                for have in self.locales:
                    if have.lower() == cand.lower():
                        return have
        return self.default_locale

    def render(self, locale: str | None, ctx: dict[str, Any]) -> tuple[str, dict[str, str]]:
        chosen = self.pick_locale(locale)
        return chosen, {part: text.render(ctx) for part, text in self.locales[chosen].items()}
