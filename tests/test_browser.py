"""The operator UI in headless Chromium (Debian's, driven by Playwright): log in, search a
client, see its chart drawn, run the test service; screenshots land in VAR_DIR/screenshots."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Group, Rule
from monitor.models import MonitorState
from tests.brokers import Broker
from tests.test_web_pages import seed_broker_state, seed_client

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed"),
]
SHOTS = Path(settings.VAR_DIR) / "screenshots"
PASSWORD = "service-password-1"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Playwright's driver must not think it runs inside the async loop pytest-django may set.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, live_server: Any, operator: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(live_server.url + "/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "op-pass-1")
    page.click("button[type=submit]")
    page.wait_for_url(live_server.url + "/")
    yield page
    context.close()
    assert errors == [], errors


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_search_a_client_and_see_its_charts(page: Any, live_server: Any, device: Account) -> None:
    seed_client("sensor-1")
    seed_client("pump-7", username="bob", online=False, readings=5)
    AuthEvent.objects.create(kind="acl", username="alice", allowed=False, reason="no rule matched")
    seed_broker_state()
    page.reload()
    page.locator(".chart[data-chart=messages] canvas").wait_for()
    shot(page, "dashboard")
    page.click("text=Clients")
    page.fill("#q", "sensor")
    # A locator, not wait_for_function: evaluating a string is eval, which the CSP refuses.
    expect(page.locator("#client-table tbody tr")).to_have_count(1)
    assert "q=sensor" in page.url
    shot(page, "clients")
    page.click("#client-table a:text('sensor-1')")
    page.click("nav.periods >> text=1h")
    chart = page.locator(".chart[data-chart=temperature]")
    chart.locator("canvas").wait_for()
    assert int(chart.get_attribute("data-points")) == 60
    shot(page, "client")


def test_the_clients_list_refreshes_itself(page: Any, live_server: Any, db: None) -> None:
    page.goto(live_server.url + "/clients/")
    page.wait_for_selector("text=No client matches.")
    seed_client("late-comer", readings=0)
    page.wait_for_selector("#client-table a:text('late-comer')", timeout=12_000)


def test_accounts_and_explain(page: Any, live_server: Any, sensors: Any) -> None:
    page.click("text=Accounts")
    page.click("a:text('alice')")
    page.fill("#id_topic", "commands/c1")
    page.fill("#id_client_id", "c1")
    page.select_option("#id_access", "receive")
    page.click("text=Explain >> nth=-1")
    page.wait_for_selector(".result.ok")
    shot(page, "explain")
    page.goto(live_server.url + "/accounts/new/")
    page.fill("#id_username", "pump-9")
    page.click("button:text('Create')")
    password = page.input_value("#password")
    assert Account.objects.get(username="pump-9").check_password(password)


def test_run_the_test_service(
    page: Any, live_server: Any, mosquitto: Broker, settings: Any
) -> None:
    account = Account.objects.create_account("svc", PASSWORD)
    Rule.objects.create(account=account, pattern="probe/%c", access=Access.ALL)
    settings.MQTT_HOST, settings.MQTT_PORT = "127.0.0.1", mosquitto.port
    settings.MQTT_CA_FILE = str(mosquitto.ca_file)
    settings.MONITOR_USERNAME, settings.MONITOR_PASSWORD = "svc", PASSWORD
    settings.TEST_SERVICE_AUTH_URL = live_server.url
    state = MonitorState.get()
    state.last_sys_at = state.heartbeat_at = timezone.now()
    state.save()
    page.click("text=Test service")
    page.click("#run-test")
    page.wait_for_selector("text=All steps passed", timeout=20_000)
    assert page.locator("#steps tbody tr").count() == 7
    shot(page, "test-service")


def test_pages_fit_a_phone(browser: Any, live_server: Any, operator: Any, device: Account) -> None:
    seed_client("sensor-1")
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "op-pass-1")
    page.keyboard.press("Enter")
    page.wait_for_url(live_server.url + "/")
    page.goto(live_server.url + "/clients/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400
    shot(page, "clients-phone")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    context.close()


def test_add_a_rule_and_a_member_through_the_ui(
    page: Any, live_server: Any, device: Account
) -> None:
    Group.objects.create(name="writers")
    page.goto(f"{live_server.url}/accounts/{device.pk}/")
    page.click("summary:text('Add a rule')")
    page.fill("#rule_pattern", "a/#/b")
    page.select_option("#rule_access", "publish")
    page.click("button:text('Add rule')")
    page.wait_for_selector("[role=alert]")
    assert device.rules.count() == 1
    page.fill("#rule_pattern", "telemetry/%u/+")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=POLICY_REFRESH_SECONDS")
    assert device.rules.filter(pattern="telemetry/%u/+", access=Access.PUBLISH).exists()
    shot(page, "account-rules")
    page.click("nav >> text=Groups")
    page.click("a:text('writers')")
    page.fill("#id_username", "alice")
    page.click("button:text('Add member')")
    page.wait_for_selector("text=alice added to group writers")
    assert device.groups.filter(name="writers").exists()
    shot(page, "group")


def test_rule_pages_fit_a_phone(
    browser: Any, live_server: Any, operator: Any, sensors: Any
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(live_server.url + "/accounts/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "op-pass-1")
    page.keyboard.press("Enter")
    page.wait_for_url(live_server.url + "/")
    account = Account.objects.get(username="alice")
    for url, name in ((f"/accounts/{account.pk}/", "account"), (f"/groups/{sensors.pk}/", "group")):
        page.goto(live_server.url + url)
        page.click("summary:text('Add a rule')")
        assert page.evaluate("document.documentElement.scrollWidth") <= 400, url
        shot(page, f"{name}-phone")
    context.close()
