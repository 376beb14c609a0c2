"""The operator UI in headless Chromium (Debian's, driven by Playwright): log in, search a
client, see its chart drawn, run the test service; screenshots land in VAR_DIR/screenshots."""

from __future__ import annotations

import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from brokerauth.acl import Access
from brokerauth.models import Account, AuthEvent, Group, Rule
from monitor.models import BrokerStatSample, Client, LatestValue, MonitorState, Reading
from tests.brokers import Broker
from tests.browsers import CHROMIUM
from tests.seeds import seed_broker_state, seed_client
from web.units import unit_of

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed"),
]
SHOTS = Path(settings.VAR_DIR) / "screenshots"
PASSWORD = "service-password-1"


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


@pytest.fixture
def fast_live(settings: Any) -> None:
    settings.WEB_LIVE_SECONDS = 0.5


def test_the_clients_list_refreshes_itself(
    page: Any, live_server: Any, db: None, fast_live: None
) -> None:
    page.goto(live_server.url + "/clients/")
    page.wait_for_selector("text=No client matches.")
    seed_client("late-comer", readings=0)
    page.wait_for_selector("#client-table a:text('late-comer')", timeout=10_000)


def keep_an_eye_on(page: Any, selector: str) -> None:
    """Marks the element and the window: both still there later means no reload, no rebuild."""
    page.evaluate(
        "s => { window.sameDocument = true; document.querySelector(s).dataset.kept = 'yes'; }",
        selector,
    )


def still_the_same(page: Any, selector: str) -> None:
    assert page.evaluate("() => window.sameDocument === true")
    expect(page.locator(selector)).to_have_attribute("data-kept", "yes")


def test_the_dashboard_refreshes_itself(
    page: Any, live_server: Any, db: None, fast_live: None
) -> None:
    seed_client("sensor-1", readings=0)
    seed_broker_state()
    page.reload()
    messages = page.locator(".chart[data-chart=messages]")
    expect(messages).to_have_attribute("data-points", "29")
    expect(page.locator("#online")).to_have_text("1")
    keep_an_eye_on(page, ".chart[data-chart=messages] canvas")

    Client.objects.create(client_id="pump-7", online=True, connect_count=1)
    now = timezone.now()
    BrokerStatSample.objects.bulk_create(
        BrokerStatSample(topic=f"$SYS/broker/messages/{name}", value=value, at=now)
        for name, value in (("received", 30 * 600.0), ("sent", 30 * 900.0))
    )
    expect(page.locator("#online")).to_have_text("2", timeout=10_000)
    expect(messages).to_have_attribute("data-points", "30", timeout=10_000)
    still_the_same(page, ".chart[data-chart=messages] canvas")


def test_the_client_page_refreshes_itself(
    page: Any, live_server: Any, device: Account, fast_live: None
) -> None:
    client = seed_client("sensor-1")
    page.goto(f"{live_server.url}/clients/{client.pk}/?period=1h")
    chart = page.locator(".chart[data-chart=temperature]")
    expect(chart).to_have_attribute("data-points", "60")
    expect(page.locator("h1 .badge")).to_have_text("online")
    keep_an_eye_on(page, ".chart[data-chart=temperature] canvas")

    now = timezone.now()
    Reading.objects.create(client=client, metric="temperature", value=31.5, at=now)
    LatestValue.objects.filter(client=client, metric="temperature").update(value=31.5, at=now)
    expect(page.locator("#latest")).to_contain_text("31.5", timeout=10_000)
    expect(chart).to_have_attribute("data-points", "61", timeout=10_000)

    Client.objects.filter(pk=client.pk).update(online=False)
    expect(page.locator("h1 .badge")).to_have_text("offline", timeout=10_000)
    still_the_same(page, ".chart[data-chart=temperature] canvas")


def test_a_metric_that_first_reports_while_the_page_is_open_gets_a_chart(
    page: Any, live_server: Any, db: None, fast_live: None
) -> None:
    client = Client.objects.create(client_id="fresh", online=True, connect_count=1)
    page.goto(f"{live_server.url}/clients/{client.pk}/?period=1h")
    page.wait_for_selector("text=No readings in this period.")
    Reading.objects.create(client=client, metric="temp_c", value=21.0, at=timezone.now())
    expect(page.locator("#metric-charts figcaption")).to_have_text("temp_c (°C)", timeout=10_000)
    page.locator(".chart[data-chart=temp_c] canvas").wait_for()
    expect(page.locator("text=No readings in this period.")).to_have_count(0)


def colored_rows(page: Any, selector: str, at: float) -> int:
    """How many pixels of the chart's canvas column at time `at` are drawn in a color (the
    lines), not in a gray (grid, axes, the "now" edge) or white."""
    return page.evaluate(
        """([selector, at]) => {
          const el = document.querySelector(selector);
          const u = el.uplot;
          const x = Math.round(u.valToPos(at, "x", true));
          const ctx = u.ctx;
          const { top, height } = u.bbox;
          const pixels = ctx.getImageData(x - 1, top, 3, height).data;
          let colored = 0;
          for (let i = 0; i < pixels.length; i += 4) {
            const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
            if (Math.max(r, g, b) - Math.min(r, g, b) > 60) colored++;
          }
          return colored;
        }""",
        [selector, at],
    )


def test_a_device_offline_for_a_while_is_drawn_with_a_gap(
    page: Any, live_server: Any, db: None
) -> None:
    client = Client.objects.create(client_id="sleepy", connect_count=2)
    now = timezone.now()
    rows = [
        Reading(client=client, metric="temp_c", value=20 + i % 4, at=now - timedelta(minutes=m))
        for i, m in enumerate([*range(59, 40, -1), *range(19, 0, -1)])
    ]
    Reading.objects.bulk_create(rows)
    page.goto(f"{live_server.url}/clients/{client.pk}/?period=1h")
    selector = ".chart[data-chart=temp_c]"
    expect(page.locator(selector)).to_have_attribute("data-gaps", "1")
    page.locator(selector + " canvas").wait_for()
    offline = (now - timedelta(minutes=30)).timestamp()
    online = (now - timedelta(minutes=50, seconds=30)).timestamp()
    assert colored_rows(page, selector, online) > 0  # the line is there where it was online
    assert colored_rows(page, selector, offline) == 0


def test_the_legend_shows_the_newest_values_with_units_before_any_hover(
    page: Any, live_server: Any, db: None
) -> None:
    client = Client.objects.create(client_id="th-1", online=True, connect_count=1)
    now = timezone.now()
    Reading.objects.bulk_create(
        Reading(client=client, metric="humidity_pct", value=40 + i, at=now - timedelta(minutes=m))
        for i, m in enumerate(range(30, 0, -1))
    )
    assert unit_of("humidity_pct") == "%"
    page.goto(f"{live_server.url}/clients/{client.pk}/?period=1h")
    legend = page.locator(".chart[data-chart=humidity_pct] .u-legend .u-value")
    expect(legend.first).to_contain_text("latest ")
    values = legend.all_inner_texts()
    assert "--" not in " ".join(values)
    assert values[1] == "69 %"  # the newest average, a whole number
    page.hover(".chart[data-chart=humidity_pct] .u-over", position={"x": 5, "y": 5})
    assert legend.first.inner_text() != values[0]  # hovering shows the time under the cursor
    page.mouse.move(0, 0)
    expect(legend.nth(1)).to_have_text("69 %")


def hide(page: Any, hidden: bool) -> None:
    page.evaluate(
        """hidden => {
          Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
          Object.defineProperty(document, "visibilityState",
            { value: hidden ? "hidden" : "visible", configurable: true });
          document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_a_hidden_tab_stops_polling_and_catches_up_when_shown(
    page: Any, live_server: Any, db: None, settings: Any
) -> None:
    # A minute between ticks, and the page's clock moved on by the test: no tick comes from
    # the wall clock while the test runs, and htmx's own short timers still run.
    settings.WEB_LIVE_SECONDS = 60
    page.clock.install()
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/dashboard/live/" in r.url else None)
    page.goto(live_server.url + "/")
    body, fragment = page.locator("body"), page.locator("#dashboard-live")
    expect(body).to_have_attribute("data-live-state", "running")
    expect(body).not_to_have_attribute("data-live-ticks", re.compile("."))
    for tick in ("1", "2"):
        with page.expect_request(lambda r: "/dashboard/live/" in r.url):
            page.clock.run_for(60_000)
        expect(body).to_have_attribute("data-live-ticks", tick)
        expect(fragment).not_to_have_class(re.compile("htmx-request"))
    hide(page, True)
    expect(body).to_have_attribute("data-live-state", "paused")
    page.clock.run_for(10 * 60_000)
    expect(body).to_have_attribute("data-live-ticks", "2")
    assert len(fetched) == 2
    with page.expect_request(lambda r: "/dashboard/live/" in r.url):
        hide(page, False)
    expect(body).to_have_attribute("data-live-ticks", "3")
    expect(body).to_have_attribute("data-live-state", "running")


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


def serve_the_test_service(live_server: Any, mosquitto: Broker, settings: Any) -> None:
    """The Test service's account, and the settings that point it at this test's broker."""
    account = Account.objects.create_account("svc", PASSWORD)
    Rule.objects.create(account=account, pattern="probe/%c", access=Access.ALL)
    settings.MQTT_HOST, settings.MQTT_PORT = "127.0.0.1", mosquitto.port
    settings.MQTT_CA_FILE = str(mosquitto.ca_file)
    settings.MONITOR_USERNAME, settings.MONITOR_PASSWORD = "svc", PASSWORD
    settings.TEST_SERVICE_AUTH_URL = live_server.url


def test_run_the_test_service(
    page: Any, live_server: Any, mosquitto: Broker, settings: Any
) -> None:
    serve_the_test_service(live_server, mosquitto, settings)
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
