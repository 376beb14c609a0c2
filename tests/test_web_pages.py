"""The operator UI: every page behind a login, what each shows, and its query counts."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.utils import timezone

from brokerauth.models import Account, AuthEvent
from monitor.models import (
    Client,
    MonitorState,
)
from tests.seeds import seed_client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url", ["/", "/clients/", "/accounts/", "/accounts/explain/", "/audit/", "/test-service/"]
)
def test_every_page_asks_for_a_login(client: HttpClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_an_operator_logs_in_on_the_login_page(client: HttpClient, operator: Any) -> None:
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "operator", "password": "op-pass-1"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_dashboard_shows_broker_clients_refusals_and_rates(
    operator_client: HttpClient, sensor: Client, broker_state: MonitorState
) -> None:
    AuthEvent.objects.create(kind="login", username="eve", allowed=False, reason="wrong password")
    response = operator_client.get("/")
    html = response.content.decode()
    assert "mosquitto version 2.0.18" in html
    assert "1 d 2 h 3 min" in html
    assert response.context["presence"].online == 1
    assert response.context["refused_auth"] == 1
    assert not response.context["sys_stale"]
    assert "disagree" not in html and "believes" not in html
    received, sent = response.context["charts"]["charts"]["messages"]["lines"]
    assert received[0] is None and sent[0] is None  # no rate before the second sample
    assert received[1:] == pytest.approx([10.0] * 29) and sent[1:] == pytest.approx([15.0] * 29)


def test_dashboard_warns_about_stale_data_and_a_presence_mismatch(
    operator_client: HttpClient, broker_state: MonitorState
) -> None:
    broker_state.last_sys_at = timezone.now() - timedelta(hours=1)
    broker_state.mismatch, broker_state.broker_connected = True, 5
    broker_state.mismatch_since = timezone.now() - timedelta(minutes=1)
    broker_state.save()
    for i in range(3):
        seed_client(f"dev-{i}", readings=0)
    html = operator_client.get("/").content.decode()
    assert "The monitor believes <strong>3</strong> clients are online" in html
    assert "the broker counts <strong>5</strong>" in html
    assert "The monitor&#x27;s data is stale" in html or "The monitor's data is stale" in html


def test_clients_list_searches_by_client_id_or_username(
    operator_client: HttpClient, sensor: Client
) -> None:
    seed_client("pump-7", username="bob", online=False, readings=1)
    assert _client_ids(operator_client.get("/clients/", {"q": "sensor"})) == ["sensor-1"]
    assert _client_ids(operator_client.get("/clients/", {"q": "bob"})) == ["pump-7"]
    assert _client_ids(operator_client.get("/clients/", {"status": "offline"})) == ["pump-7"]
    assert _client_ids(operator_client.get("/clients/", {"status": "never_seen"})) == []
    assert _client_ids(operator_client.get("/clients/", {"sort": "client_id"})) == [
        "pump-7",
        "sensor-1",
    ]


def test_clients_list_refreshes_as_a_partial_for_htmx(
    operator_client: HttpClient, sensor: Client
) -> None:
    response = operator_client.get("/clients/", {"q": "sensor"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.startswith('<div id="client-table" hx-get="/clients/?q=sensor"')
    assert 'hx-trigger="live-tick from:body"' in html and "<html" not in html


def test_clients_list_query_count_does_not_grow_with_clients(
    operator_client: HttpClient, django_assert_num_queries: Any
) -> None:
    Client.objects.bulk_create(Client(client_id=f"c-{i}", online=i % 2 == 0) for i in range(120))
    # session, user, count, page
    with django_assert_num_queries(4):
        response = operator_client.get("/clients/", {"status": "online"})
    assert response.context["page"].paginator.count == 60
    assert len(response.context["page"].object_list) == 50


def test_client_detail_shows_presence_sessions_telemetry_and_decisions(
    operator_client: HttpClient, sensor: Client
) -> None:
    AuthEvent.objects.create(kind="acl", username="alice", allowed=False, reason="no rule matched")
    response = operator_client.get(f"/clients/{sensor.pk}/", {"period": "1h"})
    html = response.content.decode()
    for text in ("10.0.0.5:43476", "MQTT 5", "60 s", "keepalive timeout", "not JSON"):
        assert text in html
    assert "no rule matched" in html
    charts = json.loads(_json_script(html, "chart-data"))
    temperature = charts["charts"]["temperature"]
    assert len(temperature["t"]) == 60 and None not in temperature["lines"][0]
    average, short, _long = temperature["lines"]
    assert short[-1] == pytest.approx(sum(20 + i % 7 for i in range(55, 60)) / 5)
    assert charts["windows"] == ["5 min", "15 min"]
    assert temperature["labels"] == ["average", "moving avg 5 min", "moving avg 15 min"]


def test_client_detail_query_count_does_not_grow_with_readings(
    operator_client: HttpClient, device: Account, django_assert_num_queries: Any
) -> None:
    client = seed_client("busy", readings=2000)
    # session, user, client, account, owner (prefix, claim), sessions, latest values,
    # telemetry buckets, events, the change feed's followers
    with django_assert_num_queries(11):
        response = operator_client.get(f"/clients/{client.pk}/", {"period": "24h"})
    assert len(response.context["charts"]["charts"]["humidity"]["t"]) <= 301


def test_client_detail_of_an_unknown_client_is_404(operator_client: HttpClient) -> None:
    assert operator_client.get("/clients/999/").status_code == 404


def test_accounts_list_and_detail_show_own_and_group_rules(
    operator_client: HttpClient, sensors: Any
) -> None:
    html = operator_client.get("/accounts/").content.decode()
    assert "alice" in html and "sensors" in html
    account = Account.objects.get(username="alice")
    response = operator_client.get(f"/accounts/{account.pk}/")
    assert [r.pattern for r in response.context["own_rules"]] == ["devices/%u/#"]
    assert {r.pattern for r in response.context["group_rules"]} == {"commands/%c"}


def test_creating_an_account_shows_its_generated_password_once(
    operator_client: HttpClient, sensors: Any
) -> None:
    response = operator_client.post(
        "/accounts/new/", {"username": "pump-9", "groups": [sensors.pk], "description": "pump"}
    )
    assert response.status_code == 200
    password = response.context["password"]
    account = Account.objects.get(username="pump-9")
    assert account.check_password(password)
    assert list(account.groups.all()) == [sensors]
    assert password not in operator_client.get(f"/accounts/{account.pk}/").content.decode()


def test_creating_an_account_with_a_taken_name_shows_the_error(
    operator_client: HttpClient, device: Account
) -> None:
    response = operator_client.post("/accounts/new/", {"username": "alice"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_disabling_and_resetting_an_account(operator_client: HttpClient, device: Account) -> None:
    operator_client.post(f"/accounts/{device.pk}/active/", {"active": "0"})
    device.refresh_from_db()
    assert not device.is_active
    response = operator_client.post(f"/accounts/{device.pk}/reset-password/")
    device.refresh_from_db()
    assert device.check_password(response.context["password"])


def test_a_non_staff_user_reads_but_cannot_change_accounts(
    viewer_client: HttpClient, device: Account
) -> None:
    assert viewer_client.get(f"/accounts/{device.pk}/").status_code == 200
    assert viewer_client.post(f"/accounts/{device.pk}/active/", {"active": "0"}).status_code == 403
    assert viewer_client.post(f"/accounts/{device.pk}/reset-password/").status_code == 403
    assert viewer_client.get("/accounts/new/").status_code == 403
    assert viewer_client.post("/test-service/").status_code == 403
    device.refresh_from_db()
    assert device.is_active


def test_explain_says_which_rule_decides(operator_client: HttpClient, sensors: Any) -> None:
    query = {"username": "alice", "client_id": "c1", "topic": "commands/c1", "access": "receive"}
    response = operator_client.get("/accounts/explain/", query)
    result = response.context["result"]
    assert result.allowed and result.rule.pattern == "commands/%c"
    assert "allowed by rule" in response.content.decode()
    query["topic"] = "commands/other"
    assert not operator_client.get("/accounts/explain/", query).context["result"].allowed


def test_explain_answers_as_the_chosen_broker_asks(
    operator_client: HttpClient, device: Account
) -> None:
    """RabbitMQ reads '.' as a level separator: devices.alice.x is devices/alice/x there."""

    def allowed(topic: str, **broker: str) -> bool:
        query = {"username": "alice", "topic": topic, "access": "publish", **broker}
        return operator_client.get("/accounts/explain/", query).context["result"].allowed

    assert allowed("devices/alice/x") and not allowed("devices.alice.x")
    assert allowed("devices.alice.x", broker="rabbitmq")
    assert not allowed("devices.bob.x", broker="rabbitmq")


def test_explain_shows_a_malformed_topic_as_a_form_error(
    operator_client: HttpClient, device: Account
) -> None:
    query = {"username": "alice", "topic": "devices/#/x", "access": "publish"}
    response = operator_client.get("/accounts/explain/", query)
    assert response.status_code == 200
    assert response.context["result"] is None
    assert response.context["form"].errors["topic"]


def test_audit_filters_by_account_client_result_and_time(operator_client: HttpClient) -> None:
    old = timezone.now() - timedelta(days=2)
    AuthEvent.objects.create(
        kind="login", username="alice", client_id="a", allowed=True, reason="ok"
    )
    AuthEvent.objects.create(kind="acl", username="bob", client_id="b", allowed=False, reason="no")
    AuthEvent.objects.create(
        kind="login", username="bob", client_id="b", allowed=False, reason="old", created_at=old
    )

    def reasons(**query: str) -> list[str]:
        return [e.reason for e in operator_client.get("/audit/", query).context["page"]]

    assert reasons() == ["no", "ok", "old"]
    assert reasons(username="bob") == ["no", "old"]
    assert reasons(client_id="a") == ["ok"]
    assert reasons(result="deny") == ["no", "old"]
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    assert reasons(result="deny", since=since) == ["no"]
    assert reasons(since="yesterday") == []
    AuthEvent.objects.create(
        kind="login", broker="rabbitmq", username="carol", allowed=False, reason="rabbit"
    )
    assert reasons(broker="rabbitmq") == ["rabbit"]
    assert "RabbitMQ" in operator_client.get("/audit/").content.decode()


def test_status_answers_200_with_a_database(client: HttpClient, db: None) -> None:
    response = client.get("/status/")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


@pytest.mark.django_db(transaction=True)  # the connection is closed and opened again
def test_status_answers_503_without_a_database(
    client: HttpClient, database_outage: Callable[[], Any]
) -> None:
    with database_outage():
        response = client.get("/status/")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unavailable"}
    assert client.get("/status/").status_code == 200


def test_metrics_expose_broker_clients_and_decisions(
    client: HttpClient,
    sensor: Client,
    broker_state: MonitorState,
    django_assert_num_queries: Any,
) -> None:
    AuthEvent.objects.create(kind="login", username="eve", allowed=False, reason="wrong password")
    AuthEvent.objects.create(kind="login", username="alice", allowed=True, reason="ok")
    earlier = timezone.now() - timedelta(hours=3)
    AuthEvent.objects.create(kind="acl", username="eve", allowed=False, created_at=earlier)
    # $SYS values, clients online, decisions of each window, monitor state
    with django_assert_num_queries(5):
        response = client.get("/metrics")
    text = response.content.decode()
    assert response.status_code == 200
    assert 'mqtt_broker_sys{topic="$SYS/broker/uptime"} 93784.0' in text
    assert "mqtt_clients_online 1.0" in text
    assert 'mqtt_auth_decisions_1h{kind="login",result="deny"} 1.0' in text
    assert 'mqtt_auth_decisions_1h{kind="login",result="allow"} 1.0' in text
    assert 'mqtt_auth_decisions_1h{kind="acl"' not in text
    assert 'mqtt_auth_decisions_24h{kind="acl",result="deny"} 1.0' in text
    assert 'mqtt_auth_decisions_24h{kind="login",result="deny"} 1.0' in text
    assert "mqtt_monitor_up 1.0" in text


def test_metrics_ask_for_the_token_when_one_is_set(
    client: HttpClient, db: None, settings: Any
) -> None:
    settings.METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def _client_ids(response: Any) -> list[str]:
    return [c.client_id for c in response.context["page"]]


def _json_script(html: str, element_id: str) -> str:
    start = html.index(f'<script id="{element_id}" type="application/json">')
    start = html.index(">", start) + 1
    return html[start : html.index("</script>", start)]


def test_every_described_field_has_its_description_on_the_page(
    operator_client: HttpClient, sensors: Any
) -> None:
    account = Account.objects.get(username="alice")
    for url in (
        f"/accounts/{account.pk}/",
        f"/accounts/{account.pk}/edit/",
        f"/accounts/{account.pk}/rules/new/",
        "/accounts/new/",
        "/accounts/explain/",
        f"/groups/{sensors.pk}/",
    ):
        html = operator_client.get(url).content.decode()
        described = re.findall(r'aria-describedby="([^"]+)"', html)
        assert described, url
        for element_id in described:
            assert f'id="{element_id}"' in html, (url, element_id)
