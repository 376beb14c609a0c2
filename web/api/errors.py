"""Bad input is a 4xx with a clear message, never a 500: model validation and database
constraint errors raised below the serializers are turned into DRF's validation answers.

A validation answer whose every complaint is about other data, not about the request's form,
says so in its status: 409 when a name is already taken (code "unique", or the database's
unique constraint) or the request conflicts with what exists (code "conflict": a client id
bound to the account being released), 404 when a named account or group does not exist (code
"does_not_exist"). Anything else wrong with the input is a 400. The models' codes are kept
(a client id in use by another account is "unique", brokerauth/models.py)."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.exceptions import ErrorDetail
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)
CONFLICT, MISSING = {"unique", "conflict"}, {"does_not_exist"}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(details(exc))
    elif isinstance(exc, IntegrityError):
        exc = exceptions.ValidationError(
            {"detail": f"conflicts with existing data: {exc}"}, code="unique"
        )
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.ValidationError):
        response.status_code = validation_status(exc.get_codes())
        request = context.get("request")
        log.info(
            "api: %s %s refused (%d): %.300s",
            getattr(request, "method", "?"),
            getattr(request, "path", "?"),
            response.status_code,
            response.data,
        )
    return response


def details(exc: DjangoValidationError) -> dict[str, list[ErrorDetail]]:
    """The model's complaints by field, each with its code (DRF keeps an ErrorDetail's)."""
    errors = exc.error_dict if hasattr(exc, "error_dict") else {"detail": exc.error_list}
    return {
        field: [
            ErrorDetail(message, code=error.code or "invalid")
            for error in problems
            for message in error.messages
        ]
        for field, problems in errors.items()
    }


def validation_status(codes: Any) -> int:
    found = set(flatten(codes))
    if found and found <= CONFLICT | MISSING:
        return status.HTTP_404_NOT_FOUND if found & MISSING else status.HTTP_409_CONFLICT
    return status.HTTP_400_BAD_REQUEST


def flatten(codes: Any) -> list[str]:
    if isinstance(codes, dict):
        return [code for value in codes.values() for code in flatten(value)]
    if isinstance(codes, list):
        return [code for value in codes for code in flatten(value)]
    return [str(codes)]


def not_found(request: HttpRequest, exception: Exception | None = None) -> Any:
    """handler404: the API answers in JSON, as its schema says; pages keep Django's."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)  # type: ignore[arg-type]
