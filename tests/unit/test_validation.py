"""Every mistake explained: file, line, step id and a hint, all violations at once."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from omnijourney.cli import main
from omnijourney.config import ConfigError, load, load_or_raise

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def jdir(tmp_path: Path) -> Path:
    """A copy of the shipped journeys directory to break on purpose."""
    dest = tmp_path / "journeys"
    shutil.copytree(REPO / "journeys", dest)
    return dest


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return p


def messages(d: Path) -> list[tuple[str, int | None, str | None, str, str | None]]:
    return [(Path(v.file).name, v.line, v.step, v.message, v.hint) for v in load(d).violations]


def test_the_shipped_journeys_are_valid() -> None:
    loaded = load(REPO / "journeys")
    assert [v.format() for v in loaded.violations] == []
    assert loaded.journey_set is not None
    assert sorted(loaded.journey_set.current) == [
        "browse_abandonment", "cart_abandonment", "order_updates", "support_callback", "welcome",
        "winback"]


BROKEN = """
    name: Broken
    trigger:
      event: order.placed
      when: event.properties.total >
    entry:
      re_entry: sometimes
    steps:
      - id: first
        type: wiat
      - id: second
        type: wait
        duraton: 2h
      - id: third
        type: send
        channel: email
        template: cart_remindr
"""


def test_shape_errors_are_all_reported_with_lines_and_hints(jdir: Path) -> None:
    write(jdir, "broken.yaml", BROKEN)
    got = [m for m in messages(jdir) if m[0] == "broken.yaml"]
    by_msg = {m[3]: m for m in got}
    assert by_msg["unknown step type 'wiat'"][1] == 9
    assert by_msg["unknown step type 'wiat'"][4] == "did you mean 'wait'?"
    assert by_msg["unknown field 'duraton'"][1:3] == (12, "second")
    assert by_msg["unknown field 'duraton'"][4] == "did you mean 'duration'?"
    re_entry = next(m for m in got if m[3].startswith("re_entry:"))
    assert re_entry[1] == 6
    assert "after <duration>" in re_entry[3]


def test_graph_and_reference_errors(jdir: Path) -> None:
    write(jdir, "graphy.yaml", """
        trigger: {event: cart.item_added, when: "event.properties.total >"}
        steps:
          - id: start
            type: branch
            branches:
              - when: profile.consent.email
                next: emial
            else: lonely_end
          - id: email
            type: send
            channel: email
            template: cart_remindr
          - id: sms
            type: send
            channel: sms
            template: cart_reminder
          - id: lonely_end
            type: end
    """)
    got = [m for m in messages(jdir) if m[0] == "graphy.yaml"]
    text = "\n".join(f"{line} {step} {msg} | {hint}" for _, line, step, msg, hint in got)
    assert "1 None trigger.when: CEL syntax error at 1:25" in text
    assert "7 start 'branches.0.next' points to undefined step 'emial' | did you mean 'email'?" in text
    assert "12 email unknown template 'cart_remindr' | did you mean 'cart_reminder'?" in text
    assert "16 sms template 'cart_reminder' is for email, not sms" in text


def test_unreachable_steps_and_waitless_loops(jdir: Path) -> None:
    write(jdir, "loops.yaml", """
        trigger: {event: product.viewed}
        steps:
          - id: a
            type: update_profile
            set: {seen: "yes"}
          - id: b
            type: goto
            next: a
          - id: orphan
            type: end
          - id: waits
            type: wait
            duration: 1h
            next: waits
    """)
    got = {(line, step, msg) for f, line, step, msg, _hint in messages(jdir)
           if f == "loops.yaml"}
    assert (3, "a", "loop without a wait: a -> b -> a") in got
    assert (9, "orphan", "step 'orphan' can never be reached") in got
    # A loop through a wait is fine (it cannot spin), only unreachable here.
    assert (11, "waits", "step 'waits' can never be reached") in got


def test_split_wait_and_ads_rules(jdir: Path) -> None:
    write(jdir, "rules.yaml", """
        trigger: {event: product.viewed}
        steps:
          - id: ab
            type: split
            variants:
              - {name: a, percent: 50, next: w}
              - {name: b, percent: 30, next: w}
            holdout: 10
          - id: w
            type: wait
            duration: 1h
            until_local_time: "10:00"
          - id: ad
            type: send
            channel: ads
          - id: bad_cel
            type: branch
            branches:
              - when: profle.consent.email == true
                next: ad
    """)
    got = {msg for f, _, _, msg, _ in messages(jdir) if f == "rules.yaml"}
    assert "variants and holdout add up to 90%, not 100%" in got
    assert "a wait needs exactly one of duration, until_local_time, until (found duration, until_local_time)" in got
    assert "an ads send needs 'audience' (the audience to add to or remove from)" in got
    assert any("unknown name(s) profle" in m for m in got)
    write(jdir, "fax.yaml", """
        trigger: {event: product.viewed}
        steps:
          - {id: fax, type: send, channel: fax, template: cart_reminder}
    """)
    (fax,) = [m for m in messages(jdir) if m[0] == "fax.yaml"]
    assert fax[1:4] == (3, "fax", "'fax' is not allowed for 'channel'")
    assert fax[4] is not None and "'email'" in fax[4]


def test_yaml_syntax_error_names_the_line(jdir: Path) -> None:
    write(jdir, "syntax.yaml", "trigger:\n  event: order.placed\n steps: [\n")
    (_f, line, _, msg, _), = [m for m in messages(jdir) if m[0] == "syntax.yaml"]
    assert msg.startswith("YAML syntax:")
    assert line == 3


def test_template_and_policy_problems(jdir: Path) -> None:
    write(jdir / "templates", "oops.yaml", """
        channel: sms
        locales:
          en:
            subject: "not for sms"
            text: "{{ profile.first_name "
    """)
    write(jdir, "policies.yaml", """
        defaults: {timezone: Mars/Olympus, contact_window: "21:00-21:00"}
        transactional: [order_confirmaton]
    """)
    got = {(f, line, msg) for f, line, _, msg, _ in messages(jdir)}
    assert ("oops.yaml", 4, "'subject' is not a part of sms templates") in got
    assert any(f == "oops.yaml" and line == 5 and "Liquid error" in m for f, line, m in got)
    assert any(f == "policies.yaml" and line == 1 and "contact window" in m for f, line, m in got)


def test_duplicate_versions_and_bad_event_types(jdir: Path) -> None:
    write(jdir, "welcome_copy.yaml", (jdir / "welcome.yaml").read_text().replace(
        "name: Welcome", "id: welcome\nname: Welcome copy"))
    write(jdir, "typo.yaml", "trigger: {event: order.place}\nsteps: [{id: x, type: end}]\n")
    msgs = messages(jdir)
    assert any("journey 'welcome' version 1 is also defined in" in m[3] for m in msgs)
    typo = next(m for m in msgs if m[0] == "typo.yaml")
    assert typo[4] == "did you mean 'order.placed'?"
    assert load(jdir).journey_set is None


def test_worker_refuses_a_half_valid_configuration(jdir: Path) -> None:
    write(jdir, "broken.yaml", BROKEN)
    with pytest.raises(ConfigError, match=r"broken.yaml:9: error: \[step first\] unknown step type"):
        load_or_raise(jdir)


def test_cli_validate_exit_codes_and_json(jdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(jdir)]) == 0
    write(jdir, "broken.yaml", BROKEN)
    assert main(["validate", str(jdir / "welcome.yaml")]) == 0  # only that file is reported
    capsys.readouterr()
    assert main(["validate", "--format", "json", str(jdir / "broken.yaml")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {r["file"].rsplit("/", 1)[-1] for r in report} == {"broken.yaml"}
    assert all(r["line"] for r in report)
    assert main(["validate", str(jdir / "missing.yaml")]) == 2


def test_a_shape_error_does_not_hide_the_other_problems(jdir: Path) -> None:
    write(jdir, "mixed.yaml", """
        trigger: {event: cart.item_added, when: "event.properties.total >"}
        steps:
          - id: wait_a_bit
            type: wait
            duraton: 1h
          - id: remind
            type: send
            channel: email
            template: cart_remindr
            next: wait_a_bit
          - id: ask
            type: branch
            branches:
              - {when: "profle.x == 1", next: nowhere}
    """)
    got = {(line, msg) for f, line, _, msg, _ in messages(jdir) if f == "mixed.yaml"}
    assert (5, "unknown field 'duraton'") in got
    assert any(line == 1 and "CEL syntax error" in msg for line, msg in got)
    assert (9, "unknown template 'cart_remindr'") in got
    assert any(line == 14 and "unknown name(s) profle" in msg for line, msg in got)
    assert (14, "'branches.0.next' points to undefined step 'nowhere'") in got
    # The link to the broken step still resolves, and no graph verdict is guessed at.
    assert not any("wait_a_bit" in msg or "reached" in msg or "loop" in msg for _, msg in got)
    assert load(jdir).journey_set is None


def test_loops_whose_waits_can_all_be_zero_are_rejected(jdir: Path) -> None:
    write(jdir, "zero.yaml", """
        trigger: {event: product.viewed}
        steps:
          - id: ping
            type: webhook
            url: https://hooks.example/x
          - id: hold
            type: wait_for
            event: order.placed
            timeout: 0s
            on_timeout: ping
    """)
    write(jdir, "zerowait.yaml", """
        trigger: {event: product.viewed}
        steps:
          - {id: pause, type: wait, duration: 0s}
          - {id: again, type: goto, next: pause}
    """)
    write(jdir, "fine.yaml", """
        trigger: {event: product.viewed}
        steps:
          - {id: pause, type: wait, duration: 1h}
          - {id: again, type: goto, next: pause}
    """)
    got = {(f, step, msg) for f, _line, step, msg, _hint in messages(jdir)}
    assert ("zero.yaml", "hold", "loop whose waits can all be zero: ping -> hold -> ping") in got
    assert ("zerowait.yaml", "pause",
            "loop whose waits can all be zero: pause -> again -> pause") in got
    assert not [g for g in got if g[0] == "fine.yaml"]


def test_an_unknown_cel_function_is_a_validation_error_with_its_line(jdir: Path) -> None:
    write(jdir, "weekend.yaml", """
        trigger: {event: product.viewed}
        steps:
          - id: only_saturdays
            type: branch
            branches:
              - {when: "now.getDayOfWeeks(profile.timezone) == 6", next: fin}
          - {id: fin, type: end}
    """)
    got = [(line, step, msg) for f, line, step, msg, _ in messages(jdir) if f == "weekend.yaml"]
    assert any(line == 6 and step == "only_saturdays" and "unknown function(s) getDayOfWeeks"
               in msg for line, step, msg in got), got


def test_the_shipped_policies_send_no_marketing_without_consent() -> None:
    """Issue 11, point 13: ads shipped opt_out, so audiences got customers who never agreed."""
    from omnijourney.config import load
    from omnijourney.core.channels import CHANNELS

    js = load(Path(__file__).resolve().parents[2] / "journeys").journey_set
    assert js is not None
    assert {ch: js.policies.consent.get(ch, "opt_in") for ch in CHANNELS if ch != "webhook"} \
        == dict.fromkeys(("email", "sms", "push", "ads"), "opt_in")


def test_messages_in_marketer_words(tmp_path: Path) -> None:
    """Issue 11, point 15."""
    only = tmp_path / "one"
    only.mkdir()
    shutil.copytree(REPO / "journeys" / "templates", only / "templates")
    # A wrong indentation says so (not "expected <block end>, but found '?'"), and a
    # folder whose one journey is invalid reports that file, not "no journey files".
    write(only, "promo.yaml", """
        trigger:
          event: product.viewed
         steps:
          - {id: fin, type: end}
    """)
    got = messages(only)
    assert [(f, line) for f, line, *_ in got] == [("promo.yaml", 3)], got
    assert "not indented like the lines around it" in got[0][3]
    assert "<block end>" not in got[0][3]
    # and / or in CEL point at && / ||.
    write(only, "promo.yaml", """
        trigger: {event: product.viewed, when: "event.properties.a == 1 and event.properties.b == 'or'"}
        steps:
          - {id: fin, type: end}
    """)
    (why,) = [m for f, _, _, m, _ in messages(only) if f == "promo.yaml"]
    assert why.endswith("CEL writes && for and")
    # A versioned file without id: takes the name before the version.
    (only / "promo.yaml").unlink()
    write(only, "promo.v1.yaml", """
        trigger: {event: product.viewed}
        steps:
          - {id: fin, type: end}
    """)
    write(only, "promo.v2.yaml", """
        version: 2
        trigger: {event: product.viewed}
        steps:
          - {id: fin, type: end}
    """)
    loaded = load(only)
    assert [v.format() for v in loaded.violations] == []
    assert loaded.journey_set is not None and loaded.journey_set.current["promo"].version == 2


def test_template_typos_and_partials_are_caught_before_run_time(jdir: Path) -> None:
    """Issue 11, point 14: profile.custmer_id and | defualt passed validate; {% render %}
    passed and failed at run time."""
    write(jdir / "templates", "typo.yaml", """
        channel: email
        locales:
          en:
            subject: "Hi {{ profile.first_name | defualt: 'there' }}"
            text: "Your id {{ profile.custmer_id }} {{ profle.email }} {{ data.code }}"
            html: "{% render 'footer' %}"
    """)
    got = {(f, line, sev, msg, hint) for f, line, _s, msg, hint, sev in [
        (Path(v.file).name, v.line, v.step, v.message, v.hint, v.severity)
        for v in load(jdir).violations] if f == "typo.yaml"}
    assert ("typo.yaml", 4, "error", "typo en.subject: unknown filter 'defualt'",
            "did you mean 'default'?") in got
    assert ("typo.yaml", 5, "warning", "typo en.text: the profile has no 'custmer_id'",
            "did you mean 'customer_id'?") in got
    assert ("typo.yaml", 5, "warning", "typo en.text: unknown name 'profle'",
            "did you mean 'profile'?") in got
    assert ("typo.yaml", 6, "error", "typo en.html: {% render %} (partials) is not supported",
            "write the shared text into each template") in got
    assert not [g for g in got if "data" in g[3]]  # data.* is the send step's own
