"""Nothing at run time reaches outside: every page's HTML, the admin's and the API docs'
references only this site's URLs, and the Content-Security-Policy makes the browser refuse
anything else (ReDoc's own attempt at its CDN logo included)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client as HttpClient

from brokerauth.models import Account, Group
from tests.seeds import seed_broker_state, seed_client

# Any URL in an attribute or a CSS url(): absolute ones (scheme or //host) are outside.
REFERENCE = re.compile(
    r"""(?:\b(?:src|href|action|srcset|poster|data)=|url\()\s*["']?([^"'\s)>]+)"""
)
OUTSIDE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)


def pages(device: Account, group: Group, client_pk: int) -> list[str]:
    return [
        "/",
        "/clients/",
        f"/clients/{client_pk}/",
        "/accounts/",
        "/accounts/new/",
        f"/accounts/{device.pk}/",
        f"/accounts/{device.pk}/edit/",
        "/accounts/explain/",
        "/groups/",
        f"/groups/{group.pk}/",
        "/audit/",
        "/audit/operators/",
        "/test-service/",
        "/admin/",
        "/admin/brokerauth/account/",
        "/api/v1/",
        "/api/v1/docs/",
        "/api/v1/redoc/",
    ]


def outside_references(html: str, site: str = "http://testserver/") -> list[str]:
    return [
        url for url in REFERENCE.findall(html) if OUTSIDE.match(url) and not url.startswith(site)
    ]


def test_every_page_references_only_this_site(
    operator_client: HttpClient, device: Account, sensors: Group
) -> None:
    client = seed_client("sensor-1")
    seed_broker_state()
    for url in pages(device, sensors, client.pk):
        response = operator_client.get(url, HTTP_ACCEPT="text/html")
        assert response.status_code == 200, url
        assert outside_references(response.content.decode()) == [], url
        assert "default-src 'self'" in response["Content-Security-Policy"], url


def test_the_login_page_references_only_this_site(client: HttpClient, db: None) -> None:
    assert outside_references(client.get("/accounts/login/").content.decode()) == []


@pytest.mark.parametrize(
    "html",
    [
        '<link href="https://fonts.googleapis.com/css">',
        "<img src='//cdn.example.com/logo.svg'>",
        '<div style="background: url(https://x.example/a.png)">',
    ],
)
def test_the_check_sees_outside_references(html: str) -> None:
    assert outside_references(html)


def test_redoc_loads_no_fonts_from_a_cdn(operator_client: HttpClient, db: Any) -> None:
    html = operator_client.get("/api/v1/redoc/").content.decode()
    assert "googleapis" not in html and "gstatic" not in html
    assert "redoc.standalone.js" in html
