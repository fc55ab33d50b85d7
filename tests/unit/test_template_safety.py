"""Values go into messages escaped for where they go (issue 11, points 2 and 3)."""

from __future__ import annotations

from omnijourney.core.templates import compile_text
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
