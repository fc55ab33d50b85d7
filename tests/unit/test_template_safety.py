"""Values go into messages escaped for where they go (issue 11, points 2 and 3)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from liquid.exceptions import LiquidError
from markupsafe import Markup

from omnijourney.core.templates import TemplateError, compile_text
from tests.helpers import Driver, build, ev, signup

HOSTILE = "<img src=x onerror=alert(1)>"
TEMPLATES = {"promo": """
    channel: email
    locales:
      en:
        subject: "Hi {{ profile.first_name }}"
        text: "Hi {{ profile.first_name }}"
        html: >-
          <p>Hi {{ profile.first_name }}</p><a href="{{ event.properties.url }}">go</a>
          {{ profile.attributes.banner | safe }}
"""}
JOURNEY = """
    trigger: {event: product.viewed}
    steps:
      - {id: mail, type: send, channel: email, template: promo}
"""


def test_values_in_email_html_are_escaped_and_safe_marks_trusted_markup() -> None:
    js = build(JOURNEY, templates=TEMPLATES)
    d = Driver(js).send(signup(first_name=HOSTILE, banner="<b>Sale</b>"),
                        ev("product.viewed", "2026-03-02T11:00:00Z",
                           url='https://x.example/"><script>x()</script>'))
    (cmd,) = d.commands
    html = cmd.content["html"]
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>" not in html and "&#34;&gt;&lt;script&gt;" in html
    assert "<b>Sale</b>" in html  # the opt-out, for markup the marketer trusts
    # Plain-text parts stay as written: there is no markup to escape into.
    assert cmd.content["text"] == f"Hi {HOSTILE}"


def test_the_same_source_compiles_apart_for_html_and_text() -> None:
    src = "{{ x }}"
    assert compile_text(src).render({"x": "<b>"}) == "<b>"
    assert compile_text(src, html=True).render({"x": "<b>"}) == "&lt;b&gt;"


def test_a_structured_webhook_body_is_valid_json_whatever_the_values() -> None:
    import json

    js = build("""
        trigger: {event: product.viewed}
        steps:
          - id: hook
            type: webhook
            url: "https://crm.example/people?name={{ profile.first_name | url_encode }}"
            body:
              name: "{{ profile.first_name }}"
              note: 'said "{{ event.properties.quote }}"'
              tags: [vip, "{{ event.properties.tag }}"]
              score: 3
          - id: text_hook
            type: webhook
            url: https://crm.example/raw
            body: '{"name": {{ profile.first_name | json }}}'
    """)
    d = Driver(js).send(signup(first_name='Jo "JJ" \\ <x>'),
                        ev("product.viewed", "2026-03-02T11:00:00Z", quote='a"b', tag="t&1"))
    structured, text = d.commands
    body = json.loads(structured.content["body"])
    assert body == {"name": 'Jo "JJ" \\ <x>', "note": 'said "a"b"', "tags": ["vip", "t&1"],
                    "score": 3}
    assert structured.content["url"] == "https://crm.example/people?name=Jo+%22JJ%22+%5C+%3Cx%3E"
    assert json.loads(text.content["body"]) == {"name": 'Jo "JJ" \\ <x>'}


# ----------------------------------------------- plain texts printed without Liquid

_VALUES = st.one_of(
    st.text(alphabet="ab <>&'\"é", max_size=6), st.integers(-5, 5), st.booleans(), st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=32), st.lists(st.integers(0, 3),
                                                                         max_size=2),
    st.builds(Markup, st.sampled_from(["<b>x</b>", ""])),
    st.dictionaries(st.sampled_from(["first_name", "size"]), st.text(max_size=3), max_size=2))
_PATHS = ["profile.first_name", "profile.attributes.score", "event.properties.name",
          "data.code", "missing.thing", "profile", "profile.first_name.size",
          "profile.attributes.first_name", "now"]
_PIECES = st.one_of(
    st.text(alphabet="xy <>&{}%'\"\n", max_size=5).filter(
        lambda t: "{{" not in t and "{%" not in t and not t.endswith("{")),
    st.sampled_from(_PATHS).map(lambda p: "{{ " + p + " }}"),
    st.tuples(st.sampled_from(_PATHS), st.sampled_from(["there", "<i>&", "", "O'Neil"])).map(
        lambda pd: "{{ " + pd[0] + " | default: " + repr(pd[1]) + " }}"),
    st.tuples(st.sampled_from(_PATHS), st.sampled_from(["there", ""])).map(
        lambda pd: '{{- ' + pd[0] + ' | default: "' + pd[1] + '" -}}'),
    st.sampled_from(["{{ profile.first_name | upcase }}", "{% if data.code %}c{% endif %}",
                     "{{ 'lit' }}", "{{ data.code | default: 'a' | upcase }}"]))


@settings(max_examples=400, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=5), html=st.booleans(),
       values=st.tuples(_VALUES, _VALUES, _VALUES, _VALUES), attrs=st.booleans())
def test_plain_texts_print_what_liquid_prints(pieces: list[str], html: bool,
                                              values: tuple[object, ...], attrs: bool) -> None:
    """Texts of literal text and ``{{ path }}`` / ``{{ path | default: '…' }}`` print
    strings and integers without Liquid; whatever the text and the values, the result
    (or the error) is the one Liquid gives."""
    source = "".join(pieces)
    first, score, name, code = values
    profile: dict[str, object] = {"first_name": first}
    if attrs:
        profile["attributes"] = {"score": score}
    ctx = {"profile": profile, "event": {"properties": {"name": name}}, "data": {"code": code},
           "now": datetime(2026, 3, 2, tzinfo=UTC)}
    text = compile_text(source, html=html)
    liquid: str | None
    try:
        liquid, liquid_error = str(text.template.render(**ctx)), None
    except LiquidError as exc:
        liquid, liquid_error = None, str(exc).splitlines()[0]
    try:
        ours, our_error = text.render(ctx), None
    except TemplateError as exc:
        ours, our_error = None, str(exc)
    assert (ours, our_error) == (liquid, liquid_error), source


def test_the_shipped_templates_are_mostly_plain_and_print_as_liquid_does() -> None:
    from omnijourney.config import load

    js = load(Path(__file__).resolve().parents[2] / "journeys").journey_set
    assert js is not None
    texts = [t for tmpl in js.templates.values() for loc in tmpl.locales.values()
             for t in loc.values()]
    plain = [t for t in texts if t.plain is not None]
    assert len(plain) >= len(texts) * 2 // 3  # order updates use tags: Liquid renders them
    ctx = {"profile": {"first_name": "Ana <x>", "customer_id": "c1"},
           "event": {"properties": {"product_name": "Shoe & Co", "cart_id": "k1",
                                    "order_id": 7}},
           "last_event": {"properties": {}}, "data": {"discount_code": "AB12",
                                                      "category": "shoes", "offer_code": "Q"},
           "now": datetime(2026, 3, 2, tzinfo=UTC)}
    for t in plain:
        assert t.render(ctx) == str(t.template.render(**ctx))
