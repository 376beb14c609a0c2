"""System checks for what the settings name but never create (importing them does no I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_database_directory(**kwargs: Any) -> list[Error]:
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return []
    directory = Path(database["NAME"]).parent
    if directory.is_dir():
        return []
    return [
        Error(
            f"The SQLite database {database['NAME']} would be in {directory}, which does not "
            "exist.",
            hint="Create that directory (bin/run and bin/test create VAR_DIR), or point "
            "DATABASE_URL at another place.",
            id="web.E001",
        )
    ]
