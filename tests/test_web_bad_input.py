"""No input makes a page or the API answer 500: malformed input is a 400 (or the page shows
the filter's error), with a log line, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client as HttpClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from brokerauth.models import Account
from monitor.models import Client

UI_PAGES = ["/clients/", "/accounts/", "/audit/", "/accounts/explain/"]


@pytest.fixture
def api(operator: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.mark.parametrize("url", [*UI_PAGES, "/api/v1/clients/", "/api/v1/audit/"])
def test_a_nul_in_a_search_box_or_filter_is_a_400_and_a_log_line(
    operator_client: HttpClient, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="web.badinput"):
        response = operator_client.get(url, {"q": "a\x00b", "search": "x"})
    assert response.status_code == 400
    assert "NUL" in response.content.decode()
    assert "query parameter 'q' contains a NUL character" in caplog.text


def test_a_nul_in_a_form_encoded_api_write_is_a_400(api: APIClient, device: Account) -> None:
    response = api.post("/api/v1/groups/", {"name": "a\x00b"})
    assert response.status_code == 400
    assert response.json() == {"detail": "form field 'name' contains a NUL character."}
    response = api.post("/api/v1/groups/", {"name": "g", "accounts": ["al\x00ice"]}, format="json")
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


def test_a_lone_surrogate_in_a_json_body_is_a_400(api: APIClient, db: None) -> None:
    body = b'{"name": "g", "accounts": ["\\ud800"]}'
    response = api.generic("POST", "/api/v1/groups/", body, content_type="application/json")
    assert response.status_code == 400
    assert "surrogate" in response.json()["detail"]


@pytest.mark.parametrize(
    "since", ["2030-01-01T00:00:00+16:00", "2030-01-01T00:00:00-23:59", "0001-01-01T00:00+01:00"]
)
@pytest.mark.parametrize("url", ["/audit/", "/api/v1/audit/", "/api/v1/sessions/"])
def test_a_utc_offset_past_15_59_filters_as_the_instant_it_names(
    operator_client: HttpClient, url: str, since: str
) -> None:
    response = operator_client.get(url, {"since": since, "until": "9999-12-31T23:59:59-05:00"})
    assert response.status_code == 200


def test_the_audit_filters_have_their_own_labels(operator_client: HttpClient) -> None:
    html = operator_client.get("/audit/").content.decode()
    for label in ("Account", "Client id", "Kind", "Result", "Since", "Until"):
        assert f">{label}</label>" in html
    assert "[invalid name]" not in html and "greater than" not in html


# Whatever a person types into the UI's search boxes, filters, period and page links.
text = st.text(st.characters(codec="utf-8"), max_size=40)
instants = st.one_of(
    text,
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2030-13-01"]),
)
queries = st.fixed_dictionaries(
    {},
    optional={
        "q": text,
        "status": st.one_of(text, st.sampled_from(Client.Status.values)),
        "sort": st.one_of(text, st.sampled_from(["client_id", "-last_seen", "last_seen"])),
        "page": st.one_of(text, st.integers().map(str)),
        "period": st.one_of(text, st.sampled_from(["1h", "6h", "24h", "7d", "30d"])),
        "username": text,
        "client_id": text,
        "kind": text,
        "result": st.one_of(text, st.just("deny")),
        "since": instants,
        "until": instants,
        "topic": text,
        "access": text,
    },
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=queries, page=st.sampled_from([*UI_PAGES, "/", "/client", "/test-service/"]))
def test_no_query_makes_a_page_answer_500(
    operator_client: HttpClient, device: Account, query: dict[str, str], page: str
) -> None:
    if page == "/client":
        client, _ = Client.objects.get_or_create(client_id="sensor-1")
        page = f"/clients/{client.pk}/"
    response = operator_client.get(page, query)
    assert response.status_code in (200, 400), (page, query, response.status_code)
