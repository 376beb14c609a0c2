"""REST API: clients, sessions, telemetry, broker statistics, audit, schema and docs."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from brokerauth.models import AuthEvent
from monitor.models import BrokerStat, BrokerStatSample, Client, MonitorState
from tests.seeds import seed_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(operator: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def sensor(db: None) -> Client:
    return seed_client("sensor-1")


def test_clients_are_listed_filtered_searched_and_sorted(api: APIClient, sensor: Client) -> None:
    seed_client("pump-7", username="bob", online=False, readings=1)
    Client.objects.create(client_id="ghost")
    ids = _ids(api.get("/api/v1/clients/"))
    assert ids == ["ghost", "pump-7", "sensor-1"]
    assert _ids(api.get("/api/v1/clients/?status=online")) == ["sensor-1"]
    assert _ids(api.get("/api/v1/clients/?status=offline")) == ["pump-7"]
    assert _ids(api.get("/api/v1/clients/?status=never_seen")) == ["ghost"]
    assert _ids(api.get("/api/v1/clients/?search=bob")) == ["pump-7"]
    assert _ids(api.get("/api/v1/clients/?username=alice")) == ["sensor-1"]
    by_last_seen = _ids(api.get("/api/v1/clients/?ordering=-last_seen"))
    # Where NULLs sort depends on the database; the seen clients come newest first.
    assert [i for i in by_last_seen if i != "ghost"] == ["pump-7", "sensor-1"]


def test_a_bad_client_filter_is_a_400(api: APIClient) -> None:
    response = api.get("/api/v1/clients/?status=sleeping")
    assert response.status_code == 400
    assert "status" in response.json()


def test_clients_list_query_count_does_not_grow(
    api: APIClient, django_assert_num_queries: Any
) -> None:
    Client.objects.bulk_create(Client(client_id=f"c-{i}") for i in range(200))
    with django_assert_num_queries(3):  # count, page, client id prefixes (owners)
        body = api.get("/api/v1/clients/").json()
    assert body["count"] == 200 and len(body["results"]) == 50


def test_client_detail_carries_latest_values(
    api: APIClient, sensor: Client, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(3):  # client, latest values, client id prefixes
        body = api.get(f"/api/v1/clients/{sensor.pk}/").json()
    assert body["status"] == "online"
    assert {v["metric"] for v in body["latest"]} == {"temperature", "humidity"}
    assert api.get("/api/v1/clients/9999/").status_code == 404


def test_sessions_by_client(api: APIClient, sensor: Client) -> None:
    seed_client("other", readings=0)
    body = api.get("/api/v1/sessions/?client_id=sensor-1").json()
    assert body["count"] == 2
    assert body["results"][0]["disconnected_at"] is None
    assert body["results"][1]["reason"] == "timeout"
    assert api.get(f"/api/v1/sessions/?client={sensor.pk}").json()["count"] == 2
    assert api.get("/api/v1/sessions/?since=not-a-date").status_code == 400


def test_telemetry_is_downsampled_to_the_requested_points(
    api: APIClient, sensor: Client, django_assert_num_queries: Any
) -> None:
    with django_assert_num_queries(2):  # client, buckets of every metric
        body = api.get("/api/v1/telemetry/", {"client": "sensor-1", "period": "1h", "points": 10})
        body = body.json()
    assert body["client"] == "sensor-1"
    series = {s["metric"]: s["points"] for s in body["series"]}
    assert set(series) == {"temperature", "humidity"}
    assert 9 <= len(series["temperature"]) <= 10  # never more than asked for
    assert sum(p["count"] for p in series["temperature"]) == 60
    first = series["temperature"][0]
    assert first["min"] <= first["avg"] <= first["max"]


def test_telemetry_of_one_metric_by_client_pk_and_explicit_period(
    api: APIClient, sensor: Client
) -> None:
    now = timezone.now()
    query = {
        "client": str(sensor.pk),
        "metric": "humidity",
        "since": (now - timedelta(minutes=30)).isoformat(),
        "until": now.isoformat(),
        "points": 1000,
    }
    body = api.get("/api/v1/telemetry/", query).json()
    assert [s["metric"] for s in body["series"]] == ["humidity"]
    assert len(body["series"][0]["points"]) in (29, 30)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "client"),
        ({"client": "sensor-1", "points": 0}, "points"),
        ({"client": "sensor-1", "points": 99999}, "points"),
        ({"client": "sensor-1", "period": "1y"}, "period"),
        ({"client": "sensor-1", "since": "yesterday"}, "since"),
        ({"client": "sensor-1", "until": "2030-01-01T00:00:00+24:00"}, "until"),
        ({"client": "sensor-1", "metric": "\x00"}, "NUL"),
    ],
)
def test_bad_telemetry_queries_are_a_400(
    api: APIClient, sensor: Client, query: dict[str, Any], message: str
) -> None:
    response = api.get("/api/v1/telemetry/", query)
    assert response.status_code == 400
    assert message in str(response.json())


@pytest.mark.parametrize(
    ("query", "since", "until"),
    [
        # Offsets past 15:59, which PostgreSQL refuses, are read as the instant they name.
        (
            {"since": "2030-01-01T20:00+20:00", "until": "2030-01-02T00:00-23:59"},
            "2030-01-01T00:00:00Z",
            "2030-01-02T23:59:00Z",
        ),
        # An empty range has no readings; `since` wins over `period`.
        (
            {"since": "2030-01-02T00:00Z", "until": "2030-01-01T00:00Z"},
            "2030-01-02T00:00:00Z",
            "2030-01-02T00:00:00Z",
        ),
        (
            {"period": "1h", "since": "2029-12-31T00:00Z", "until": "2030-01-01T00:00Z"},
            "2029-12-31T00:00:00Z",
            "2030-01-01T00:00:00Z",
        ),
        # At most the 400 days before `until` are read, and the answer says so.
        (
            {"since": "2000-01-01T00:00Z", "until": "2030-01-01T00:00Z"},
            "2028-11-27T00:00:00Z",
            "2030-01-01T00:00:00Z",
        ),
        # The first days there are: no overflow, no readings.
        ({"until": "0001-01-01T00:00:00Z"}, "0001-01-02T00:00:00Z", "0001-01-02T00:00:00Z"),
        ({"until": "0001-01-01T00:00:00+01:00"}, "0001-01-02T00:00:00Z", "0001-01-02T00:00:00Z"),
        ({"until": "9999-12-31T23:59:59-10:00"}, "9999-12-30T23:59:59.999999Z", None),
    ],
)
def test_any_range_of_instants_is_read_as_the_range_it_names(
    api: APIClient, sensor: Client, query: dict[str, str], since: str, until: str | None
) -> None:
    response = api.get("/api/v1/telemetry/", {"client": "sensor-1", **query})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["since"] == since
    assert until is None or body["until"] == until


def test_telemetry_of_an_unknown_client_is_a_404(api: APIClient, db: None) -> None:
    assert api.get("/api/v1/telemetry/", {"client": "nobody"}).status_code == 404


def test_broker_statistics_and_samples(api: APIClient) -> None:
    now = timezone.now()
    BrokerStat.objects.create(
        topic="$SYS/broker/uptime", value="5 seconds", number=5, updated_at=now
    )
    BrokerStatSample.objects.create(topic="$SYS/broker/bytes/sent", value=10, at=now)
    BrokerStatSample.objects.create(
        topic="$SYS/broker/bytes/sent", value=5, at=now - timedelta(hours=2)
    )
    stats = api.get("/api/v1/broker/stats/").json()
    assert stats == [
        {
            "topic": "$SYS/broker/uptime",
            "name": "uptime",
            "value": "5 seconds",
            "number": 5.0,
            "updated_at": stats[0]["updated_at"],
        }
    ]
    since = (now - timedelta(hours=1)).isoformat()
    body = api.get("/api/v1/broker/samples/", {"topic": "$SYS/broker/bytes/sent", "since": since})
    assert [s["value"] for s in body.json()["results"]] == [10.0]


def test_audit_filters(api: APIClient) -> None:
    AuthEvent.objects.create(
        kind="login", username="alice", client_id="a", allowed=True, reason="ok"
    )
    AuthEvent.objects.create(kind="acl", username="bob", client_id="b", allowed=False, reason="no")
    assert api.get("/api/v1/audit/").json()["count"] == 2
    assert _reasons(api.get("/api/v1/audit/?result=deny")) == ["no"]
    assert _reasons(api.get("/api/v1/audit/?username=alice")) == ["ok"]
    assert _reasons(api.get("/api/v1/audit/?client_id=b&kind=acl")) == ["no"]
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert _reasons(api.get("/api/v1/audit/", {"since": future})) == []
    assert api.get("/api/v1/audit/?result=maybe").status_code == 400
    assert api.post("/api/v1/audit/", {}).status_code == 405


def test_schema_and_docs_are_served_from_local_files(api: APIClient, operator: Any) -> None:
    response = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/v1/accounts/", "/api/v1/telemetry/", "/api/v1/test-service/"):
        assert path in paths
    for url in ("/api/v1/docs/", "/api/v1/redoc/"):
        html = api.get(url).content.decode()
        assert "/static/drf_spectacular_sidecar/" in html
        # No address outside this site (a bare "cdn" also matched a random CSRF token once).
        assert not re.search(r"(https?:)?//(?!testserver)[\w.-]+\.\w+", html), html


def test_test_service_round_trip_reports_every_step(api: APIClient, settings: Any) -> None:
    # No broker listens on this port: the MQTT steps fail fast, the others still run.
    settings.MQTT_HOST, settings.MQTT_PORT, settings.TEST_SERVICE_AUTH_URL = "127.0.0.1", 9, ""
    state = MonitorState.get()
    state.last_sys_at = timezone.now()
    state.save()
    body = api.post("/api/v1/test-service/").json()
    steps = {s["name"]: s for s in body["steps"]}
    assert body["ok"] is False
    assert steps["TLS connect"]["ok"] is False
    assert steps["subscribe"]["ok"] is None
    assert steps["auth endpoints"]["ok"] is None
    assert steps["database"]["ok"] is True
    assert steps["$SYS freshness"]["ok"] is True


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [c["client_id"] for c in response.json()["results"]]


def _reasons(response: Any) -> list[str]:
    return [e["reason"] for e in response.json()["results"]]
