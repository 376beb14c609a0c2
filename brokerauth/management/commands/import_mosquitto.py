from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from brokerauth import mosquitto_import
from brokerauth.models import Account
from brokerauth.mosquitto_files import read_acl_file, read_password_file


class Command(BaseCommand):
    help = (
        "Bring a plain Mosquitto's password_file and acl_file in: accounts keep their $6$/$7$ "
        "hashes (no password reset), acl_file lines become rules with Mosquitto 2.0's answers "
        "(brokerauth/mosquitto_import.py says how). What exists already is left as it is, so a "
        "second run changes nothing. Lines that cannot be carried over are listed with their "
        "line numbers, and the command then exits with status 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--password-file", type=Path, required=True)
        parser.add_argument("--acl-file", type=Path, required=True)
        parser.add_argument(
            "--group",
            default=mosquitto_import.EVERYONE_GROUP,
            help="The group that holds the pattern lines, every imported account in it.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Say what would change.")

    def handle(self, *args: Any, **options: Any) -> None:
        entries, problems = read_password_file(_read(options["password_file"]))
        acl, acl_problems = read_acl_file(_read(options["acl_file"]))
        existing = set(Account.objects.values_list("username", flat=True))
        plan = mosquitto_import.plan(
            passwords=entries, acl=acl, existing=existing, group=options["group"]
        )
        changes = mosquitto_import.apply(plan, dry_run=options["dry_run"])
        verb = "Would change" if options["dry_run"] else "Changed"
        for change in changes:
            self.stdout.write(f"{verb}: {change}")
        if not changes:
            self.stdout.write("Nothing to change: the policy already holds both files.")
        problems += acl_problems + plan.problems
        for problem in sorted(problems, key=lambda p: (p.file, p.line)):
            self.stderr.write(f"Not imported: {problem}")
        if problems:
            raise CommandError(f"{len(problems)} lines could not be imported (listed above).")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
