"""Rate limits of the REST API (DRF throttles), read from the settings at each request so
that they follow API_THROTTLE_RATES (and tests can change them).

- `user`: the requests of one signed-in user or token (UserThrottle);
- `failed_auth`: wrong tokens from one address (TokenAuthentication below): past the rate the
  answer is a 429, not a 401. DRF's own anonymous throttle never runs here: every endpoint
  needs a user, and the permission check answers 401 before any throttle is asked.

Counts live in Django's cache, which is per process here (no shared cache is deployed): with
WEB_CONCURRENCY workers a client may reach the rate in each of them, so the bound a client
can really reach is the rate times the number of workers."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import authentication, exceptions
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle


class RatesFromSettings:
    scope: str | None

    def get_rate(self) -> str | None:
        return settings.API_THROTTLE_RATES.get(self.scope or "")


class UserThrottle(RatesFromSettings, UserRateThrottle):
    """Requests of one signed-in user or token."""


class FailedAuthThrottle(RatesFromSettings, SimpleRateThrottle):
    scope = "failed_auth"

    def get_cache_key(self, request: Request, view: Any) -> str:
        # By address only: request.user is what is being authenticated.
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's token authentication, with wrong tokens counted per address."""

    def authenticate(self, request: Request) -> Any:
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            throttle = FailedAuthThrottle()
            if not throttle.allow_request(request, None):  # type: ignore[arg-type]
                raise exceptions.Throttled(throttle.wait()) from None
            raise
