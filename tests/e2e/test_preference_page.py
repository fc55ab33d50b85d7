"""The preference page in a real headless browser: Debian's Chromium, driven by Selenium
through chromedriver (both installed by ``make browser``), against the tracking server on
loopback. A person opens the link from a message, changes their choices and saves; the
event the engine receives says exactly that. The screenshot in the README is the one this
test takes (``OMNIJOURNEY_SCREENSHOTS=docs`` writes it there)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import Select, WebDriverWait

from omnijourney.config import load
from omnijourney.core.events import Event
from omnijourney.tracking.clicks import ClickServer
from omnijourney.tracking.preferences import PreferencePages, preferences_link

REPO = Path(__file__).resolve().parents[2]
SECRET = "browser-test-secret"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # Headless, and nothing that would call out of this closed network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=900,1100",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def server() -> Iterator[tuple[ClickServer, list[Event]]]:
    js = load(REPO / "journeys").journey_set
    assert js is not None
    saved: list[Event] = []
    pages = PreferencePages(SECRET, js.policies, saved.append, wall=lambda: datetime.now(UTC))
    srv = ClickServer(SECRET, lambda r: None, preferences=pages).start()
    yield srv, saved
    srv.stop()


def after_submit(browser: webdriver.Chrome, by: str, value: str, text: str) -> str:
    """The text of an element of the page a form post led to, once it shows ``text``: a
    click on a submit button returns before the next page has loaded (a busy machine
    made that a flake)."""
    WebDriverWait(browser, 30).until(seen.text_to_be_present_in_element((by, value), text))
    return str(browser.find_element(by, value).text)


def test_a_customer_changes_their_choices_in_a_real_browser(
        browser: webdriver.Chrome, server: tuple[ClickServer, list[Event]],
        tmp_path: Path) -> None:
    srv, saved = server
    link = preferences_link(f"http://127.0.0.1:{srv.port}", SECRET, "c-ana", "en",
                            datetime.now(UTC))
    browser.get(link)
    assert browser.title == "Your message preferences"
    boxes = {b.get_attribute("value"): b
             for b in browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")}
    assert set(boxes) == {"email", "sms", "push", "newsletter", "order_updates", "promotions"}
    boxes["sms"].click()  # no more texts
    boxes["newsletter"].click()  # but the newsletter, please
    Select(browser.find_element(By.NAME, "window_from")).select_by_value("10:00")
    Select(browser.find_element(By.NAME, "window_to")).select_by_value("18:00")
    Select(browser.find_element(By.NAME, "timezone")).select_by_value("Europe/Berlin")
    shot = tmp_path / "preference-page.png"
    browser.save_screenshot(str(shot))
    browser.find_element(By.CSS_SELECTOR, "button[value=save]").click()
    assert "Saved." in after_submit(browser, By.ID, "saved", "Saved.")
    (event,) = saved
    assert event.customer_id == "c-ana" and event.type == "preferences.updated"
    assert event.properties == {
        "channels": {"email": True, "sms": False, "push": True},
        "topics": {"newsletter": True, "order_updates": True, "promotions": True},
        "contact_window": "10:00-18:00", "timezone": "Europe/Berlin"}
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    out = os.environ.get("OMNIJOURNEY_SCREENSHOTS")
    if out:
        shutil.copy(shot, REPO / out / shot.name)


def test_the_browser_is_refused_a_forged_link_and_a_second_post(
        browser: webdriver.Chrome, server: tuple[ClickServer, list[Event]]) -> None:
    srv, saved = server
    base = f"http://127.0.0.1:{srv.port}"
    browser.get(preferences_link(base, "another-secret", "c-ana", "en", datetime.now(UTC)))
    assert "not valid" in browser.find_element(By.TAG_NAME, "p").text
    link = preferences_link(base, SECRET, "c-ana", "de", datetime.now(UTC))
    browser.get(link)
    used = browser.find_element(By.NAME, "form").get_attribute("value")
    browser.find_element(By.CSS_SELECTOR, "button[value=unsubscribe_all]").click()
    assert "abgemeldet" in after_submit(browser, By.ID, "saved", "abgemeldet")
    # The same form posted again (a replay, as an attacker or a resubmitting browser
    # would): built here by script, the page itself has none.
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "for (const [k, v] of [['form', arguments[1]], ['action', 'unsubscribe_all']]) {"
        " const i = document.createElement('input'); i.name = k; i.value = v; f.append(i); }"
        "document.body.append(f); f.submit();", link.removeprefix(base), used)
    assert "bereits gespeichert" in after_submit(browser, By.TAG_NAME, "p",
                                                 "bereits gespeichert")
    assert [e.properties for e in saved] == [{"unsubscribe_all": True}]
