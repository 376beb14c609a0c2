"""MQTT accounts, groups, ACL rules and the audit of auth decisions.

The rules live here: `Account.objects.authenticate()` is the login rule (bcrypt, remembered
verifications, lockout, client-id binding), `Account.objects.explain_acl()` the ACL decision
read fresh from the database, `AuthEvent.objects.record()` the audit of every decision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.db.models import Q
from django.utils import timezone

from brokerauth import acl, passwords, topics

log = logging.getLogger("brokerauth.decision")


@dataclass(frozen=True)
class Login:
    """The answer to one login: may the client connect, and why (the audit's reason)."""

    allowed: bool
    reason: str


class AccountQuerySet(models.QuerySet["Account"]):
    def authenticate(self, username: str, password: str, clientid: str) -> Login:
        """The login rule. Unknown and disabled accounts cost a bcrypt verification too, so
        that timing tells nothing; a locked account is refused before its password is read.
        The caller records the answer (AuthEvent.objects.record)."""
        now = timezone.now()
        account = self.filter(username=username).first()
        if account is None:
            passwords.burn(password)
            return Login(False, "unknown account")
        if account.is_locked(now):
            # Read by operators on the audit page: to the second, in UTC, without microseconds.
            until = f"{account.locked_until:%Y-%m-%d %H:%M:%S} UTC"
            return Login(False, f"locked after failed logins until {until}")
        if not account.is_active:
            passwords.burn(password)
            return Login(False, "account disabled")
        if not passwords.verify_login(username, password, account.password_hash):
            account.record_failure(now)
            return Login(False, "wrong password")
        if account.client_id and account.client_id != clientid:
            return Login(False, f"account is bound to client id {account.client_id!r}")
        account.record_success(now)
        return Login(True, "password verified")

    def create_account(self, username: str, password: str, **fields: object) -> Account:
        """A new account, validated and saved (see Account.save_new)."""
        account = self.model(username=username, **fields)
        account.save_new(password)
        return account

    def subject(self, username: str) -> acl.Subject | None:
        """The account and every rule that applies to it (own and groups'), in two queries."""
        account = self.filter(username=username).first()
        if account is None:
            return None
        rules = Rule.objects.applying_to(account).distinct()
        return acl.Subject(
            username=account.username,
            active=account.is_active,
            superuser=account.is_superuser,
            rules=tuple(rule.compiled() for rule in rules),
        )

    def explain_acl(
        self,
        username: str,
        clientid: str,
        topic: str,
        access: acl.Access,
        dialect: topics.Dialect = topics.MOSQUITTO,
    ) -> acl.Decision:
        """The ACL decision read fresh from the database, without side effects: what the UI,
        the API and `manage.py explain_acl` show. The broker asks `policy.explain_acl()`, which
        reaches the same answer from memory. Raises topics.TopicError on a malformed topic."""
        return acl.decide(self.subject(username), clientid, topic, access, dialect)


class Credential(models.TextChoices):
    """Where an account's secret came from, which decides how it is stored (passwords.py)."""

    GENERATED = "generated", "generated secret"
    PASSWORD = "password", "chosen password"
    IMPORTED = "imported", "imported hash"


class Account(models.Model):
    username = models.CharField(max_length=255, unique=True)
    password_hash = models.CharField(max_length=128, editable=False)
    credential = models.CharField(
        max_length=10,
        choices=Credential.choices,
        default=Credential.PASSWORD,
        editable=False,
        help_text="A generated secret is stored as PBKDF2-SHA512 and checked in microseconds; "
        "a chosen password keeps bcrypt; an imported Mosquitto hash is kept as it is.",
    )
    is_active = models.BooleanField("active", default=True)
    is_superuser = models.BooleanField(
        "superuser", default=False, help_text="Allowed every topic, without rules."
    )
    client_id = models.CharField(
        "bound client id",
        max_length=255,
        blank=True,
        help_text="When set, only this client id may log in with this account.",
    )
    description = models.TextField(blank=True)
    groups: models.ManyToManyField[Group, Membership] = models.ManyToManyField(
        "Group", through="Membership", related_name="accounts", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    changed_at = models.DateTimeField(auto_now=True)
    last_login_at = models.DateTimeField(null=True, blank=True, editable=False)
    failed_logins = models.PositiveIntegerField(default=0, editable=False)
    locked_until = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AccountQuerySet.as_manager()

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.username

    # Changes. The admin (forms and actions), the UI, the API and the commands create accounts,
    # change passwords and enable or disable them only through these methods, so that what
    # goes with a change is written once: the password rules (passwords.validate), the
    # lockout reset, and the policy note, `changed_at`, which every process's
    # policy_fingerprint() watches. A change feed to the broker would be noted here too.
    def save_new(self, password: str = "", *, generated: bool = False) -> str:
        """Save this new account and return its secret, to be shown once: `password` as
        chosen (bcrypt), or a generated secret (`$7$`) when no password is given, or when
        `generated` says the caller made `password` with passwords.generate() (the demo
        devices share one kept in a file)."""
        if password and not generated:
            self._set_password(password)
        else:
            password = self._set_secret(password)
        self.full_clean()
        self.save()
        return password

    def change_password(self, raw: str) -> None:
        """A password an operator chose (bcrypt)."""
        self._set_password(raw)
        self._save_credential()

    def reset_password(self, secret: str = "") -> str:
        """Give the account a generated secret and return it, to be shown once: a new one,
        or `secret` made by passwords.generate() and kept by the caller."""
        secret = self._set_secret(secret)
        self._save_credential()
        return secret

    def import_hash(self, stored: str) -> None:
        """Keep a hash from a mosquitto_passwd file as it is (`$6$` or `$7$`): the device's
        password does not change. Saves a new account too."""
        if passwords.parse_mosquitto(stored) is None:
            raise ValidationError({"password_hash": "not a Mosquitto $6$ or $7$ hash"})
        self.password_hash, self.credential = stored, Credential.IMPORTED
        self.failed_logins, self.locked_until = 0, None
        if self.pk is None:
            self.full_clean()
            self.save()
        else:
            self._save_credential()

    def set_active(self, active: bool) -> None:
        """Enable or disable the account: a disabled one can neither log in nor pass a check."""
        self.is_active = active
        self.save(update_fields=["is_active", "changed_at"])

    def edit(self, password: str = "", **fields: Any) -> None:
        """Save an operator's changes: the active flag through set_active(), a new password
        through change_password(), the other fields in one save. Every edit form (admin, UI)
        and the API's update come through here."""
        active = fields.pop("is_active", None)
        for name, value in fields.items():
            setattr(self, name, value)
        if fields:
            self.save(update_fields=[*fields, "changed_at"])
        if active is not None:
            self.set_active(active)
        if password:
            self.change_password(password)

    def unlock(self) -> None:
        """Forget the failed logins; update(), not save(): not a policy change."""
        self.failed_logins, self.locked_until = 0, None
        Account.objects.filter(pk=self.pk).update(failed_logins=0, locked_until=None)

    def _set_password(self, raw: str) -> None:
        """A new password (not saved); it also lifts a lockout earned by the old one."""
        passwords.validate(raw)
        self.password_hash, self.credential = passwords.hash_password(raw), Credential.PASSWORD
        self.failed_logins, self.locked_until = 0, None

    def _set_secret(self, secret: str) -> str:
        secret = secret or passwords.generate()
        if not passwords.looks_generated(secret):
            raise ValueError("a generated secret comes from passwords.generate()")
        self.password_hash, self.credential = passwords.hash_secret(secret), Credential.GENERATED
        self.failed_logins, self.locked_until = 0, None
        return secret

    def _save_credential(self) -> None:
        fields = ["password_hash", "credential", "failed_logins", "locked_until", "changed_at"]
        self.save(update_fields=fields)

    @property
    def guessable(self) -> bool:
        """Could this secret be guessed online? Not a generated one (144 random bits)."""
        return self.credential != Credential.GENERATED

    @property
    def credential_text(self) -> str:
        """What the admin, the UI and the API say about the secret: kind and algorithm."""
        return f"{self.get_credential_display()}, {passwords.algorithm(self.password_hash)}"

    def check_password(self, raw: str) -> bool:
        return passwords.verify(raw, self.password_hash)

    # The lockout rule: after LOGIN_LOCKOUT_THRESHOLD consecutive failures, each further one
    # locks the account for LOGIN_LOCKOUT_BASE_SECONDS * 2**extra, at most _MAX_SECONDS; a good
    # login or a new password starts the count again.
    def is_locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def lockout_after_failure(self, now: datetime) -> datetime | None:
        """When this account unlocks if one more failure happens now (None: not locked)."""
        extra = self.failed_logins + 1 - settings.LOGIN_LOCKOUT_THRESHOLD
        if extra < 0:
            return None
        seconds = min(
            settings.LOGIN_LOCKOUT_BASE_SECONDS * 2 ** min(extra, 30),
            settings.LOGIN_LOCKOUT_MAX_SECONDS,
        )
        return now + timedelta(seconds=seconds)

    def record_failure(self, now: datetime) -> None:
        # update(), not save(): login bookkeeping must not look like a policy change.
        self.locked_until = self.lockout_after_failure(now)
        self.failed_logins += 1
        Account.objects.filter(pk=self.pk).update(
            failed_logins=models.F("failed_logins") + 1, locked_until=self.locked_until
        )

    def record_success(self, now: datetime) -> None:
        self.failed_logins, self.locked_until, self.last_login_at = 0, None, now
        Account.objects.filter(pk=self.pk).update(
            failed_logins=0, locked_until=None, last_login_at=now
        )


class Group(models.Model):
    name = models.CharField(max_length=150, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    changed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="memberships")
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="memberships")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "group"], name="unique_membership")
        ]

    def __str__(self) -> str:
        return f"{self.account} in {self.group}"


class RuleQuerySet(models.QuerySet["Rule"]):
    def applying_to(self, account: Account) -> RuleQuerySet:
        """The account's own rules and those of its groups, with their owners."""
        return self.filter(
            Q(account=account) | Q(group__memberships__account=account)
        ).select_related("account", "group")


class Rule(models.Model):
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.CASCADE, related_name="rules"
    )
    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.CASCADE, related_name="rules"
    )
    pattern = models.CharField(
        max_length=1024,
        help_text="MQTT filter; + and # wildcards; %u / %c stand for the username / client id.",
    )
    access = models.PositiveSmallIntegerField(
        choices=[(int(access), access.label) for access in acl.RULE_ACCESSES]
    )
    allow = models.BooleanField(default=True, help_text="Unticked: the rule denies.")
    priority = models.IntegerField(
        default=0, help_text="Highest wins; deny beats allow at equal priority."
    )
    description = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    changed_at = models.DateTimeField(auto_now=True)

    objects = RuleQuerySet.as_manager()

    class Meta:
        ordering = ["-priority", "allow", "pattern"]
        constraints = [
            models.CheckConstraint(
                condition=Q(account__isnull=True) ^ Q(group__isnull=True),
                name="rule_has_one_owner",
                violation_error_message="A rule belongs to exactly one account or one group.",
            )
        ]

    def __str__(self) -> str:
        return self.compiled().describe()

    def clean(self) -> None:
        try:
            topics.validate_pattern(self.pattern)
        except topics.TopicError as exc:
            raise ValidationError({"pattern": str(exc)}) from exc

    @property
    def owner(self) -> str:
        if self.account_id:
            return f"account {self.account}"
        return f"group {self.group}"

    def compiled(self) -> acl.Rule:
        return acl.Rule(
            pattern=self.pattern,
            access=acl.Access(self.access),
            allow=self.allow,
            priority=self.priority,
            source=self.owner,
            id=self.pk,
        )


def policy_fingerprint() -> tuple[object, ...]:
    """A cheap summary that changes whenever accounts, groups, memberships or rules change.

    Counts catch deletions, the latest change time catches edits, the largest id catches a
    delete-and-add. One query, whatever the size of the tables.
    """
    parts = []
    for model, column in (
        (Account, "changed_at"),
        (Group, "changed_at"),
        (Rule, "changed_at"),
        (Membership, "created_at"),
    ):
        table = connection.ops.quote_name(model._meta.db_table)
        parts.append(f"(SELECT COUNT(*) FROM {table})")
        parts.append(f"(SELECT MAX({column}) FROM {table})")
        parts.append(f"(SELECT MAX(id) FROM {table})")
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts))
        return tuple(cursor.fetchone() or ())


class AuthEventManager(models.Manager["AuthEvent"]):
    # A Manager, not a QuerySet's as_manager(): those build a QuerySet on every call, a few
    # microseconds that every allowed ACL check (the hot path, which writes nothing) would pay.
    def record(
        self,
        kind: str,
        verdict: Login | acl.Decision,
        username: str,
        clientid: str,
        topic: str = "",
        access: int | None = None,
        *,
        broker: str = topics.MOSQUITTO.name,
    ) -> None:
        """The audit of one decision: a line on the `brokerauth.decision` logger and a row for
        every login and every denial, saying which broker asked (AuthEvent.Broker). An allowed
        ACL check is logged at DEBUG only and never written: it is the hot path."""
        if verdict.allowed and kind == AuthEvent.Kind.ACL:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "acl allow broker=%s user=%.100r client=%.100r acc=%d topic=%.200r: %s",
                    broker,
                    username,
                    clientid,
                    access,
                    topic,
                    verdict.reason,
                )
            return
        log.info(
            "%s %s broker=%s user=%.100r client=%.100r acc=%s topic=%.200r: %s",
            kind,
            "allow" if verdict.allowed else "deny",
            broker,
            username,
            clientid,
            access,
            topic,
            verdict.reason,
        )
        self.create(
            kind=kind,
            broker=broker,
            username=username[:255],
            client_id=clientid[:255],
            topic=topic[:1024],
            access=access,
            allowed=verdict.allowed,
            reason=verdict.reason[:500],
        )

    def prune(self, days: int) -> int:
        cutoff = timezone.now() - timedelta(days=days)
        deleted, _ = self.filter(created_at__lt=cutoff).delete()
        return deleted


class AuthEvent(models.Model):
    """The audit: every login attempt and every denial (allows are not written)."""

    class Kind(models.TextChoices):
        LOGIN = "login"
        ACL = "acl"
        SUPERUSER = "superuser"
        VHOST = "vhost"  # RabbitMQ: may the account use the MQTT virtual host
        RESOURCE = "resource"  # RabbitMQ: the queues and exchange of an MQTT session

    class Broker(models.TextChoices):
        """Which broker asked (topics.DIALECTS has the same names)."""

        MOSQUITTO = topics.MOSQUITTO.name, "Mosquitto"
        RABBITMQ = topics.RABBITMQ.name, "RabbitMQ"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    broker = models.CharField(max_length=20, choices=Broker.choices, default=Broker.MOSQUITTO)
    username = models.CharField(max_length=255)
    client_id = models.CharField(max_length=255, blank=True)
    topic = models.TextField(blank=True)
    access = models.PositiveSmallIntegerField(null=True, blank=True)
    allowed = models.BooleanField()
    reason = models.CharField(max_length=500)

    objects = AuthEventManager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["username", "-created_at"]),
            models.Index(fields=["client_id", "-created_at"]),
        ]

    def __str__(self) -> str:
        verdict = "allow" if self.allowed else "deny"
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.kind} {self.username} {verdict}"
