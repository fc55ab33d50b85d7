"""Values go into messages escaped for where they go (issue 11, points 2 and 3)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from liquid.exceptions import LiquidError
from markupsafe import Markup

from omnijourney.core.plaintext import render_parts
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
_WORDS = st.sampled_from(["a", "", "1", "<b>", "true"])
_VALUES = _VALUES | _WORDS  # often the words the cases below test for
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
    st.sampled_from(_PATHS).map(lambda p: "{{ " + p + " | short_hash }}"),
    st.tuples(st.sampled_from(_PATHS), st.sampled_from(["w", "", "<&>"])).map(
        lambda ps: "{{ " + ps[0] + " | short_hash: " + repr(ps[1]) + " }}"),
    st.sampled_from(["{{ profile.first_name | upcase }}", "{% if data.code == 1 %}c{% endif %}",
                     "{{ 'lit' }}", "{{ data.code | default: 'a' | upcase }}",
                     "{% if data.code %} {% endif %}", "{% case data.code %}{% when 1 %}1"
                     "{% endcase %}", "{% unless data.code %}u{% endunless %}"]))


def _tags(inner: st.SearchStrategy[str], paths: list[str] = _PATHS) -> st.SearchStrategy[str]:
    """``{% if %}`` (with elsif and else) and ``{% case %}`` (string whens, else anywhere)
    around texts from ``inner``, as marketers write them."""
    body = st.lists(inner, min_size=1, max_size=3).map("".join)
    cond = st.sampled_from(paths)
    ifs = st.tuples(cond, body, st.lists(st.tuples(cond, body), max_size=2),
                    st.none() | body, st.booleans()).map(
        lambda t: ("{%- if " if t[4] else "{% if ") + t[0] + " %}" + t[1]
        + "".join("{% elsif " + c + " %}" + b for c, b in t[2])
        + ("" if t[3] is None else "{% else %}" + t[3]) + "{% endif -%}")
    arm = st.one_of(
        st.tuples(st.lists(_WORDS, min_size=1, max_size=3), body).map(
            lambda w: "{% when " + ", ".join(map(repr, w[0])) + " %}" + w[1]),
        body.map(lambda b: "{% else %}" + b))
    cases = st.tuples(cond, st.lists(arm, min_size=1, max_size=4)).map(
        lambda t: "{% case " + t[0] + " %}" + "".join(t[1]) + "{% endcase %}")
    return ifs | cases


_TEXTS = st.recursive(_PIECES, _tags, max_leaves=8)


@settings(max_examples=1500, deadline=None)
@given(pieces=st.lists(_TEXTS, max_size=5), html=st.booleans(),
       values=st.tuples(_VALUES, _VALUES, _VALUES, _VALUES), attrs=st.booleans())
def test_plain_texts_print_what_liquid_prints(pieces: list[str], html: bool,
                                              values: tuple[object, ...], attrs: bool) -> None:
    """Texts of literal text, ``{{ path }}`` / ``{{ path | default: '…' }}`` /
    ``{{ path | short_hash: '…' }}`` and ifs and cases around them print without Liquid;
    whatever the text and the values, the result (or the error) is the one Liquid
    gives."""
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


_SIMPLE = st.one_of(_WORDS, st.none(), st.booleans(), st.integers(0, 2),
                   st.floats(allow_nan=False, width=32))
_FOUND = ["profile.first_name", "profile.attributes.score", "event.properties.name",
          "data.code", "missing.thing"]
_SIMPLE_TEXTS = st.recursive(st.one_of(
    st.sampled_from(["x", " <&> ", "\n"]),
    st.sampled_from(_FOUND).map(lambda p: "{{ " + p + " | default: 'd' }}"),
    st.sampled_from(_FOUND).map(lambda p: "{{ " + p + " | short_hash: 's' }}")),
    lambda inner: _tags(inner, _FOUND), max_leaves=8)


@settings(max_examples=1000, deadline=None)
@given(source=_SIMPLE_TEXTS, html=st.booleans(),
       values=st.tuples(_SIMPLE, _SIMPLE, _SIMPLE, _SIMPLE))
def test_ifs_and_cases_print_what_liquid_prints(source: str, html: bool,
                                                values: tuple[object, ...]) -> None:
    """The same, with the values ifs and cases meet in messages (words, nothing, true or
    false, numbers), so that most texts are decided without Liquid; those that are print
    Liquid's text."""
    first, score, name, code = values
    ctx = {"profile": {"first_name": first, "attributes": {"score": score}},
           "event": {"properties": {"name": name}}, "data": {"code": code}}
    text = compile_text(source, html=html)
    try:
        liquid: str | None = str(text.template.render(**ctx))
    except LiquidError:
        liquid = None
    fast = render_parts(text.plain, ctx, html) if text.plain is not None else None
    assert fast is None or fast == liquid, source


def test_the_shipped_templates_are_mostly_plain_and_print_as_liquid_does() -> None:
    from omnijourney.config import load

    js = load(Path(__file__).resolve().parents[2] / "journeys").journey_set
    assert js is not None
    texts = [t for tmpl in js.templates.values() for loc in tmpl.locales.values()
             for t in loc.values()]
    plain = [t for t in texts if t.plain is not None]
    # Only the filters Liquid alone has (url_encode, local_time) are left to it.
    assert [t.source for t in texts if t.plain is None and "url_encode" not in t.source
            and "local_time" not in t.source] == []
    for status, tracking in (("shipped", "https://t.example/1"), ("lost", None),
                             ("delivered", "")):
        ctx = {"profile": {"first_name": "Ana <x>", "customer_id": "c1"},
               "event": {"properties": {"product_name": "Shoe & Co", "cart_id": "k1",
                                        "order_id": 7}},
               "last_event": {"properties": {"order_id": "o-9", "status": status,
                                             "tracking_url": tracking}},
               "data": {"discount_code": "AB12", "category": "shoes", "offer_code": "Q"},
               "now": datetime(2026, 3, 2, tzinfo=UTC)}
        for t in plain:
            fast = render_parts(t.plain, ctx, t.template.env.autoescape)
            assert t.render(ctx) == str(t.template.render(**ctx)), t.source
            # Decided without Liquid, except an empty value printed without a default.
            assert fast is not None or (tracking == "" and "tracking_url" in t.source)
