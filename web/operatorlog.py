"""Who changed which account, group or rule, and when: Django admin's LogEntry table.

The admin writes it for every change made there; the UI's views and the API's viewsets write
it here, in the admin's own words (its JSON change messages), so that one table, the audit
page's "Operator actions" and /api/v1/operator-actions/ show every operator change
whichever way it was made."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db.models import Model, QuerySet

ACTIONS = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}


def _log(user: Any, obj: Model, flag: int, message: str | list[Any]) -> None:
    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[obj],
        action_flag=flag,
        change_message=message,
        single_object=True,
    )


def added(user: Any, obj: Model) -> None:
    _log(user, obj, ADDITION, [{"added": {}}])


def changed(user: Any, obj: Model, fields: list[str] | None = None, note: str = "") -> None:
    """A change of these fields (their labels), or one described by `note`."""
    _log(user, obj, CHANGE, note or [{"changed": {"fields": fields or []}}])


def deleted(user: Any, obj: Model) -> None:
    """Before the delete: the entry keeps the object's id and name."""
    _log(user, obj, DELETION, "")


def disconnected(user: Any, obj: Model, client_id: str) -> None:
    """An operator's Disconnect of `client_id`, noted on its client (or, for a client the
    monitor never saw, on the change feed's note)."""
    _log(user, obj, CHANGE, f"Disconnected client {client_id}.")


def recent() -> QuerySet[LogEntry]:
    return LogEntry.objects.select_related("user", "content_type").order_by("-action_time")
