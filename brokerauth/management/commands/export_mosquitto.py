from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from brokerauth import mosquitto_export
from web import secretfile


class Command(BaseCommand):
    help = (
        "Write the policy as a plain Mosquitto's password_file and acl_file (both 0600), for "
        "running Mosquitto alone in a disaster. What the files cannot say (bcrypt hashes, "
        "priorities Mosquitto's order would decide otherwise, %%c in an account's rule) is "
        "listed, and the command then exits with status 1 (the files are written anyway)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password-file", type=Path, required=True)
        parser.add_argument("--acl-file", type=Path, required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        result = mosquitto_export.export()
        for option, text in (
            ("password_file", result.password_file),
            ("acl_file", result.acl_file),
        ):
            try:
                secretfile.write(options[option], text)
            except OSError as exc:
                raise CommandError(f"cannot write {options[option]}: {exc}") from exc
        self.stdout.write(f"Wrote {result.accounts} accounts to {options['password_file']}.")
        self.stdout.write(f"Wrote {result.rules} acl_file lines to {options['acl_file']}.")
        for note in result.said:
            self.stdout.write(f"Note: {note}")
        for item in result.left_out:
            self.stderr.write(f"Not carried over: {item}")
        if result.left_out:
            raise CommandError(
                f"{len(result.left_out)} things could not be carried over (listed above)."
            )
