from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from brokerauth import acl, topics
from brokerauth.models import Account


class Command(BaseCommand):
    help = (
        "Explain the ACL decision for USER CLIENTID TOPIC ACCESS (publish|subscribe|receive), "
        "read fresh from the database, as the explain page and the API's /explain/ do, and as "
        "the given broker asks it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("clientid")
        parser.add_argument("topic")
        parser.add_argument("access", help="publish, subscribe, receive (or 1, 2, 4)")
        parser.add_argument(
            "--broker",
            choices=sorted(topics.DIALECTS),
            default=topics.MOSQUITTO.name,
            help="rabbitmq: '.' separates levels, no $share/, subscribe needs receive too",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            access = acl.parse_access(options["access"])
            decision = Account.objects.explain_acl(
                options["username"],
                options["clientid"],
                options["topic"],
                access,
                topics.DIALECTS[options["broker"]],
            )
        except (ValueError, topics.TopicError) as exc:
            raise CommandError(str(exc)) from exc
        verdict = "ALLOW" if decision.allowed else "DENY"
        style = self.style.SUCCESS if decision.allowed else self.style.ERROR
        self.stdout.write(style(f"{verdict}: {decision.reason}"))
