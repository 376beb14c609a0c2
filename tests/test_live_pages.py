"""What the live pages fetch while they are open: htmx fragments and chart tails, each with
its query count pinned, a clear 400 for a bad query, and a 401 the page reloads on when the
operator was signed out."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.utils import timezone

from brokerauth.models import AuthEvent
from monitor.models import BrokerStatSample, Client, LatestValue, MonitorState, Reading, Session

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}
JSON = {"HTTP_ACCEPT": "application/json"}


def test_the_dashboard_fragment_is_the_cards_and_warnings_alone(
    operator_client: HttpClient, broker_state: MonitorState, django_assert_num_queries: Any
) -> None:
    Client.objects.bulk_create(Client(client_id=f"c-{i}", online=True) for i in range(30))
    # session, user, $SYS values, monitor state, online, refused CONNECTs, refused logins
    with django_assert_num_queries(7):
        response = operator_client.get("/dashboard/live/", **HX)
    html = response.content.decode()
    assert html.startswith('<div id="dashboard-live" data-live hx-get="/dashboard/live/"')
    assert 'hx-trigger="live-tick from:body"' in html and "<html" not in html
    assert '<p class="big" id="online">30</p>' in html
    assert "mosquitto version 2.0.18" in html


def test_the_dashboard_reads_a_fixed_number_of_queries_whatever_the_period(
    operator_client: HttpClient, broker_state: MonitorState, django_assert_num_queries: Any
) -> None:
    for period in ("1h", "7d"):
        # the fragment's seven, and one for all the broker charts
        with django_assert_num_queries(8):
            response = operator_client.get("/", {"period": period})
        assert response.context["period"] == period
        assert set(response.context["charts"]["charts"]) == {"clients", "messages", "bytes"}
    html = response.content.decode()
    assert 'data-series="/dashboard/series/?period=7d"' in html
    assert '<a href="?period=7d" aria-current="true">7d</a>' in html


def test_the_broker_series_answers_the_tail_after_the_newest_point(
    operator_client: HttpClient, broker_state: MonitorState, django_assert_num_queries: Any
) -> None:
    whole = operator_client.get("/dashboard/series/", **JSON).json()
    received = whole["charts"]["messages"]
    newest = received["t"][-1]
    now = timezone.now()
    BrokerStatSample.objects.bulk_create(
        BrokerStatSample(topic=f"$SYS/broker/messages/{name}", value=v, at=now)
        for name, v in (("received", 30 * 600.0), ("sent", 30 * 900.0))
    )
    with django_assert_num_queries(3):  # session, user, samples
        tail = operator_client.get("/dashboard/series/", {"after": newest}, **JSON).json()
    assert whole["from"] is None and tail["from"] <= newest
    got = tail["charts"]["messages"]
    assert 1 <= len(got["t"]) <= 2 and got["t"][-1] == pytest.approx(now.timestamp())
    assert got["lines"][0][-1] == pytest.approx(10.0, rel=0.05)


def test_the_client_fragment_carries_presence_latest_values_and_history(
    operator_client: HttpClient, sensor: Client, django_assert_num_queries: Any
) -> None:
    AuthEvent.objects.create(kind="acl", username="alice", allowed=False, reason="no rule matched")
    sensor.online = False
    sensor.save()
    # session, user, client, account, sessions, latest values, decisions
    with django_assert_num_queries(7):
        response = operator_client.get(f"/clients/{sensor.pk}/live/", **HX)
    html = response.content.decode()
    assert html.startswith(f'<div id="client-live" data-live hx-get="/clients/{sensor.pk}/live/"')
    assert '<span class="badge offline">offline</span>' in html
    assert '<div id="client-history" hx-swap-oob="true">' in html
    assert "no rule matched" in html and "keepalive timeout" in html


def test_the_client_page_holds_the_history_once_and_not_out_of_band(
    operator_client: HttpClient, sensor: Client
) -> None:
    html = operator_client.get(f"/clients/{sensor.pk}/").content.decode()
    assert html.count('id="client-history"') == 1 and "hx-swap-oob" not in html


def test_latest_values_show_their_units(
    operator_client: HttpClient, sensor: Client, settings: Any
) -> None:
    settings.TELEMETRY_UNITS = {"temperature": "°C"}
    LatestValue.objects.create(client=sensor, metric="battery_mv", value=3012, at=timezone.now())
    html = operator_client.get(f"/clients/{sensor.pk}/live/", **HX).content.decode()
    assert '<td class="num">20 °C</td>' in html
    assert '<td class="num">3012 mV</td>' in html
    assert '<td class="num">50</td>' in html  # humidity: no unit is known


def test_the_client_series_answers_the_tail_in_a_fixed_number_of_queries(
    operator_client: HttpClient, sensor: Client, django_assert_num_queries: Any
) -> None:
    url = f"/clients/{sensor.pk}/series/"
    whole = operator_client.get(url, {"period": "1h"}, **JSON).json()
    newest = whole["charts"]["temperature"]["t"][-1]
    Reading.objects.create(client=sensor, metric="temperature", value=30.0, at=timezone.now())
    with django_assert_num_queries(4):  # session, user, client, readings
        tail = operator_client.get(url, {"period": "1h", "after": newest}, **JSON).json()
    temperature = tail["charts"]["temperature"]
    assert temperature["lines"][0][-1] == 30.0
    assert len(temperature["t"]) <= 3 and temperature["unit"] == ""
    assert "humidity" in tail["charts"]  # its newest bucket, read again


def test_the_clients_table_fragment_keeps_its_query_count(
    operator_client: HttpClient, django_assert_num_queries: Any
) -> None:
    Client.objects.bulk_create(Client(client_id=f"c-{i}", online=i % 2 == 0) for i in range(120))
    with django_assert_num_queries(4):  # session, user, count, page
        response = operator_client.get("/clients/", {"status": "online"}, **HX)
    assert response.content.decode().startswith('<div id="client-table"')


@pytest.mark.parametrize("after", ["soon", "nan", "inf", "1e400", "-"])
def test_a_bad_after_is_a_400_and_a_log_line(
    operator_client: HttpClient, sensor: Client, after: str, caplog: pytest.LogCaptureFixture
) -> None:
    for url in ("/dashboard/series/", f"/clients/{sensor.pk}/series/"):
        with caplog.at_level(logging.WARNING, logger="web.views"):
            response = operator_client.get(url, {"after": after}, **JSON)
        assert response.status_code == 400
        assert "after=" in response.json()["error"]
        assert f"bad query on {url}" in caplog.text


def test_an_after_from_long_ago_or_from_the_future_is_read_as_no_after(
    operator_client: HttpClient, sensor: Client
) -> None:
    url = f"/clients/{sensor.pk}/series/"
    for after in ("0", str((timezone.now() + timedelta(days=9000)).timestamp())):
        assert operator_client.get(url, {"after": after}, **JSON).json()["from"] is None


@pytest.mark.parametrize(
    "url", ["/dashboard/live/", "/dashboard/series/", "/clients/1/live/", "/clients/1/series/"]
)
def test_signed_out_fetches_answer_401_and_reload_the_page(client: HttpClient, url: str) -> None:
    for headers in (HX, JSON):
        response = client.get(url, **headers)
        assert response.status_code == 401
        assert response["HX-Refresh"] == "true"
    # Opened in the browser, they lead to the login page like every page.
    assert client.get(url)["Location"].startswith("/accounts/login/?next=")


def test_an_unknown_client_has_no_fragment_and_no_series(operator_client: HttpClient) -> None:
    assert operator_client.get("/clients/999/live/", **HX).status_code == 404
    assert operator_client.get("/clients/999/series/", **JSON).status_code == 404


def test_every_page_says_how_often_it_refreshes(
    operator_client: HttpClient, settings: Any, db: None
) -> None:
    settings.WEB_LIVE_SECONDS = 2.5
    html = operator_client.get("/clients/").content.decode()
    assert '<meta name="live-seconds" content="2.5">' in html
    assert '"allowEval": false' in html  # htmx never evaluates strings (the CSP forbids it)
    settings.WEB_LIVE_SECONDS = 0
    assert '<meta name="live-seconds" content="0">' in operator_client.get("/").content.decode()


def test_a_session_written_while_the_page_is_open_reaches_the_fragment(
    operator_client: HttpClient, sensor: Client
) -> None:
    url = f"/clients/{sensor.pk}/live/"
    before = operator_client.get(url, **HX).content.decode()
    Session.objects.create(client=sensor, connected_at=timezone.now(), address="10.9.9.9")
    after = operator_client.get(url, **HX).content.decode()
    assert "10.9.9.9" not in before and "10.9.9.9" in after
