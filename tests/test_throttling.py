"""The operator login and the REST API are throttled: guessing a password or hammering the
API is refused with a 429, and the right password works again after the cool-off."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client as HttpClient
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def log_in(http: HttpClient, url: str, password: str) -> Any:
    return http.post(url, {"username": "operator", "password": password})


@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_twelve_wrong_passwords_lock_the_operator_login_out(
    client: HttpClient, operator: Any, url: str
) -> None:
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(12):
            assert log_in(client, url, "guess").status_code in (200, 429)
        response = log_in(client, url, "op-pass-1")
        assert response.status_code == 429
        assert "Too many failed logins" in response.content.decode()
        assert client.get("/").status_code == 302  # not signed in
        clock.shift(timedelta(minutes=16))
        assert log_in(client, url, "op-pass-1").status_code == 302
        assert client.get("/").status_code == 200


def test_another_address_is_not_locked_out(operator: Any) -> None:
    attacker, operator_http = HttpClient(REMOTE_ADDR="10.9.9.9"), HttpClient()
    for _ in range(6):
        log_in(attacker, "/accounts/login/", "guess")
    assert log_in(attacker, "/accounts/login/", "op-pass-1").status_code == 429
    assert log_in(operator_http, "/accounts/login/", "op-pass-1").status_code == 302


def test_a_good_login_forgets_the_failures(client: HttpClient, operator: Any) -> None:
    for _ in range(4):
        log_in(client, "/accounts/login/", "guess")
    assert log_in(client, "/accounts/login/", "op-pass-1").status_code == 302
    client.logout()
    for _ in range(4):
        log_in(client, "/accounts/login/", "guess")
    assert log_in(client, "/accounts/login/", "op-pass-1").status_code == 302


def test_the_api_answers_429_past_its_rate(operator: Any, settings: Any) -> None:
    settings.API_THROTTLE_RATES = {"user": "3/min", "failed_auth": "2/min"}
    api = APIClient(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=operator).key}")
    assert [api.get("/api/v1/clients/").status_code for _ in range(4)] == [200, 200, 200, 429]
    throttled = api.get("/api/v1/clients/")
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    guesser = APIClient(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert [guesser.get("/api/v1/clients/").status_code for _ in range(3)] == [401, 401, 429]
