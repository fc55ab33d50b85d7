"""Build journey sets from inline YAML and drive the evaluator in tests."""

from __future__ import annotations

import itertools
import json
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

from omnijourney.core import TICK, CustomerState, Event, JourneySet, evaluate
from omnijourney.core.commands import ChannelCommand
from omnijourney.core.parsing import parse_journey, parse_policies, parse_template
from omnijourney.core.trace import TraceEntry
from omnijourney.core.validation import validate_journey

DEFAULT_TEMPLATES = {
    "hello_email": """
        channel: email
        locales:
          en: {subject: "Hi {{ profile.first_name | default: 'there' }}", text: "Hello"}
          de: {subject: "Hallo", text: "Hallo"}
    """,
    "hello_sms": """
        channel: sms
        locales:
          en: {text: "Hi {{ profile.first_name | default: 'there' }} {{ data.code }}"}
    """,
    "hello_push": """
        channel: push
        locales:
          en: {title: "Hi", text: "Push"}
    """,
    "receipt": """
        channel: sms
        locales:
          en: {text: "Order {{ event.properties.order_id }}"}
    """,
    "broken": """
        channel: email
        locales:
          en: {subject: "x", text: "{{ profile.no_such_field }}"}
    """,
}

DEFAULT_POLICIES = """
    defaults: {timezone: UTC, contact_window: "09:00-21:00", locale: en}
    frequency_caps:
      email: {max: 2, per: 24h}
      sms: {max: 1, per: 24h}
    transactional: [receipt]
"""


def t(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def build(*journeys: str, templates: dict[str, str] | None = None,
          policies: str | None = DEFAULT_POLICIES) -> JourneySet:
    defs = []
    tdefs = {}
    for name, body in (templates or DEFAULT_TEMPLATES).items():
        parsed = parse_template(textwrap.dedent(body), f"{name}.yaml")
        assert parsed.model is not None, [v.format() for v in parsed.violations]
        tdefs[name] = parsed.model
    for i, text in enumerate(journeys):
        parsed_j = parse_journey(textwrap.dedent(text), f"j{i}.yaml", f"j{i}")
        assert parsed_j.model is not None and parsed_j.source is not None, [
            v.format() for v in parsed_j.violations]
        errors = [v for v in validate_journey(parsed_j.model, parsed_j.source, tdefs)
                  if v.severity == "error"]
        assert not errors, [v.format() for v in errors]
        defs.append(parsed_j.model)
    pol = None
    if policies is not None:
        parsed_p = parse_policies(textwrap.dedent(policies), "policies.yaml")
        assert parsed_p.model is not None, [v.format() for v in parsed_p.violations]
        pol = parsed_p.model
    return JourneySet.build(defs, tdefs, pol)


_ids = itertools.count(1)


def ev(type: str, at: str, customer: str = "c1", event_id: str | None = None,
       **props: Any) -> Event:
    return Event(event_id or f"ev-{next(_ids)}", type, customer, t(at), "test", props)


def signup(at: str = "2026-03-02T10:00:00Z", customer: str = "c1", **traits: Any) -> Event:
    base: dict[str, Any] = {"email": f"{customer}@example.com", "phone": "+15550001",
                            "push_token": "tok", "email_opt_in": True, "sms_opt_in": True,
                            "push_opt_in": True}
    base.update(traits)
    return ev("customer.signed_up", at, customer, **base)


class Driver:
    """Feeds events and ticks like the simulator, collecting commands and trace."""

    def __init__(self, js: JourneySet) -> None:
        self.js = js
        self.states: dict[str, CustomerState] = {}
        self.commands: list[ChannelCommand] = []
        self.trace: list[TraceEntry] = []

    def send(self, *events: Event) -> Driver:
        for e in events:
            out = evaluate(self.js, self.states.get(e.customer_id), e, e.occurred_at)
            self._take(e.customer_id, out)
        return self

    def advance(self, until: str, customer: str = "c1") -> Driver:
        limit = t(until)
        while True:
            st = self.states.get(customer)
            due = st.next_due() if st else None
            if due is None or due > limit:
                return self
            self._take(customer, evaluate(self.js, st, TICK, due))

    def _take(self, cid: str, out: Any) -> None:
        self.states[cid] = out.state
        self.commands.extend(out.commands)
        self.trace.extend(out.trace)

    def kinds(self, kind: str) -> list[TraceEntry]:
        return [x for x in self.trace if x.kind == kind]

    def sent(self) -> list[tuple[str, str, str]]:
        return [(c.step, c.channel, c.send_at.isoformat()) for c in self.commands]


def as_command(fields: dict[str, Any]) -> ChannelCommand:
    """A ChannelCommand from the fields a test cares about; the rest get plain defaults."""
    at = fields.get("send_at", datetime(2026, 3, 2, 12, tzinfo=UTC))
    base: dict[str, Any] = {
        "command_id": "cmd-1", "journey": "j", "journey_version": "1", "step": "s",
        "channel": "email", "customer_id": "c1", "send_at": at,
        "deadline": at + timedelta(hours=24), "template": None, "to": None, "content": {},
        "transactional": False, "trigger_event_id": "e1", "instance_key": "", "locale": None}
    return ChannelCommand(**(base | fields))


def logged(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a log (structlog's, each from its first brace on), as dicts; a
    line of another kind (Faust's own) or one still being written is passed over."""
    out = []
    for line in text.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            doc = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(doc, dict):
            out.append(doc)
    return out
