from __future__ import annotations

import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from monitor.testservice import database_step

log = logging.getLogger(__name__)


@never_cache
@require_GET
def status(request: HttpRequest) -> JsonResponse:
    """Health for load balancers and orchestrators: 200 when the database answers, else 503."""
    step = database_step()
    if not step.ok:
        # Details go to the log, not to an unauthenticated caller.
        log.error("status: database check failed: %s", step.detail)
        return JsonResponse({"status": "unavailable", "database": "unavailable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok", "database_ms": step.ms})
