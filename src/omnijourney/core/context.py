"""What conditions and templates see: the names (``profile``, ``event``, ``last_event``,
``journey``, ``now``) built once per evaluation and shared, and the values Liquid renders
for ``update_profile`` and structured webhook bodies."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from omnijourney.core import profile as prof
from omnijourney.core.catalog import CompiledJourney, Policies
from omnijourney.core.events import Event
from omnijourney.core.state import CustomerState, Instance
from omnijourney.core.templates import LINKS, compile_text

_SINGLE_OUTPUT = re.compile(r"^\s*\{\{(?:(?!\}\}).)*\}\}\s*$", re.DOTALL)
_NUMBER = re.compile(r"^-?(?:0|[1-9]\d{0,17})(?:\.\d+)?(?:[eE][+-]?\d{1,3})?$")


def typed_value(src: str | int | float | bool | None, ctx: dict[str, Any]) -> Any:
    """What ``update_profile`` stores: YAML numbers, booleans and null as they are; a text
    that is one ``{{ … }}`` output rendering a number or true/false as that number or
    boolean (so ``profile.attributes.score > 50`` compares numbers); any other text as
    the text it renders."""
    if not isinstance(src, str):
        return src
    out = compile_text(src).render(ctx)
    if _SINGLE_OUTPUT.match(src):
        text = out.strip()
        if text in ("true", "false"):
            return text == "true"
        if _NUMBER.match(text):
            number = float(text)
            return int(number) if number.is_integer() and "." not in text and \
                "e" not in text.lower() else number
    return out


def render_tree(value: Any, ctx: dict[str, Any]) -> Any:
    """Every text inside a mapping or list rendered with Liquid; other values kept."""
    if isinstance(value, str):
        return compile_text(value).render(ctx)
    if isinstance(value, dict):
        return {str(k): render_tree(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [render_tree(v, ctx) for v in value]
    return value


class Views:
    """One customer's names for one evaluation; the profile's view is built again after
    the profile changes (``forget_profile``)."""

    def __init__(self, st: CustomerState, pol: Policies) -> None:
        self.st, self.pol = st, pol
        self._profile: dict[str, Any] | None = None
        self._events: dict[int, dict[str, Any]] = {}

    def forget_profile(self) -> None:
        self._profile = None

    def profile(self) -> dict[str, Any]:
        if self._profile is None:
            self._profile = prof.view(self.st.profile, self.pol)
        return self._profile

    def event(self, ev: Event) -> dict[str, Any]:
        v = self._events.get(id(ev))
        if v is None:
            v = self._events[id(ev)] = ev.expr_view()
        return v

    def names(self, inst: Instance | None, at: datetime, event: Event | None = None,
              cj: CompiledJourney | None = None) -> dict[str, Any]:
        """Names visible to conditions and templates. ``event`` is the event under test
        (trigger, exit, goal, wait_for conditions) or, inside steps, the trigger."""
        c: dict[str, Any] = {"profile": self.profile(), "now": at, "links": LINKS}
        if inst is not None:
            c["event"] = self.event(event or inst.trigger)
            c["last_event"] = self.event(inst.last_event)
            c["journey"] = {"id": inst.journey, "version": inst.version, "key": inst.key,
                            "entered_at": inst.entered_at, "cohort": inst.cohort or "",
                            "step": inst.step}
        elif event is not None:
            c["event"] = c["last_event"] = self.event(event)
            c["journey"] = {"id": cj.id if cj else "", "version": cj.version if cj else 0,
                            "key": "", "entered_at": at, "cohort": "", "step": ""}
        return c

