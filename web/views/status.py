from __future__ import annotations

import logging
import time

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

log = logging.getLogger(__name__)


@never_cache
@require_GET
def status(request: HttpRequest) -> JsonResponse:
    """Health for load balancers and orchestrators: 200 when the database answers, else 503."""
    start = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # noqa: BLE001 - any database trouble is "unavailable"
        # Details go to the log, not to an unauthenticated caller.
        log.exception("status: database check failed")
        return JsonResponse({"status": "unavailable", "database": "unavailable"}, status=503)
    ms = round((time.perf_counter() - start) * 1000, 1)
    return JsonResponse({"status": "ok", "database": "ok", "database_ms": ms})
