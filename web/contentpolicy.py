"""Nothing a page of this site loads comes from anywhere else: a Content-Security-Policy on
every answer makes the browser refuse any script, style, font, image or connection from
another origin, before any request leaves it. The pages, the admin and the API docs use their
own static files only (uPlot and htmx from npm, Swagger UI and ReDoc from
drf-spectacular-sidecar); ReDoc still tries its CDN for a logo, which this refuses.

Inline scripts and styles stay allowed: Swagger UI and ReDoc start from one, uPlot and
styled-components set styles inline. ReDoc parses the schema in a blob: worker."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicy:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", POLICY)
        return response
