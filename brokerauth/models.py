"""MQTT accounts, groups, ACL rules, client-id ownership and the audit of auth decisions.

The rules live here: `Account.objects.authenticate()` is the login rule (generated secrets,
bcrypt, lockouts per source, client-id ownership), `Account.objects.explain_acl()` the ACL
decision read fresh from the database, `AuthEvent.objects.record()` the audit of every
decision.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F, Q, Subquery, Value
from django.db.models.functions import Length, Substr
from django.utils import timezone

from brokerauth import acl, clientids, names, passwords, topics

log = logging.getLogger("brokerauth.decision")


@dataclass(frozen=True)
class Login:
    """The answer to one login: may the client connect, why (the audit's reason), and may
    the plugin's limiter count a refusal against the username (CONTRACTS.md 1: not for a
    secret nobody can guess online, nor for a name nobody has)."""

    allowed: bool
    reason: str
    limit_username: bool = True


class AccountQuerySet(models.QuerySet["Account"]):
    def authenticate(self, username: str, password: str, clientid: str, address: str = "") -> Login:
        """The login rule. `address` is the client's, when the broker says (the project's
        plugin does, go-auth does not): failed logins of a guessable secret are counted per
        (account, source), Lockout.source_of(). A generated secret is never locked: nobody can
        guess it, so nobody else's failures may keep its device out. An unknown username
        costs one `$7$` verification, what a device account costs. The caller records the
        answer (AuthEvent.objects.record) and answers every refusal alike (wire.refuse)."""
        now = timezone.now()
        found = self.for_login(username, clientid)
        if found is None:
            passwords.burn(password)
            return Login(False, "unknown account", limit_username=False)
        account, owner = found
        guessable = account.guessable
        source = Lockout.source_of(address)
        lockout = account.lockouts.filter(source=source).first() if guessable else None
        if lockout is not None and lockout.locks(now):
            return Login(False, lockout.describe(), limit_username=True)
        verified = passwords.verify_login(username, password, account.password_hash)
        if not account.is_active:
            return Login(False, "account disabled", limit_username=guessable)
        if not verified:
            if guessable:
                Lockout.objects.fail(account, source, lockout, now)
            return Login(False, "wrong password", limit_username=guessable)
        # The secret is right: nothing is being guessed, so nothing counts against the name.
        refusal = account.client_id_refusal(clientid, owner, claim=True)
        if refusal is not None:
            return Login(False, refusal, limit_username=False)
        account.record_success(now, lockout)
        return Login(True, "password verified")

    def for_login(self, username: str, clientid: str) -> tuple[Account, acl.Owner | None] | None:
        """The account a login names and the owner of the client id it asks for
        (clientids.owner), in one query written out: the broker's event loop waits for every
        login, and the ORM took 0.85 ms to build this query where the database needs 0.05
        (docs/benchmarks.md, "Cold-login storm")."""
        candidates = [clientid[:end] for end in range(1, min(len(clientid), names.MAX_LENGTH) + 1)]
        with connection.cursor() as cursor:
            cursor.execute(_for_login_sql(len(candidates)), [clientid, *candidates, username])
            row = cursor.fetchone()
        if row is None:
            return None
        *values, claimed_by, prefix_holder = row
        account = Account.from_db(connection.alias, _LOGIN_FIELDS, values)
        prefix = acl.Owner(prefix_holder, acl.Owner.Why.PREFIX) if prefix_holder else None
        return account, clientids.owner(clientid, lambda _id: prefix, lambda _id: claimed_by)

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
            client_id=account.client_id,
            client_id_prefix=account.client_id_prefix,
            account_id=account.pk,
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
        owner = ClientId.objects.owner(clientid)
        return acl.decide(self.subject(username), clientid, topic, access, dialect, owner=owner)

    def prefix_index(self) -> clientids.PrefixIndex:
        """Every account's client id prefix, for many lookups (one query)."""
        pairs = self.exclude(client_id_prefix="").values_list("client_id_prefix", "username")
        return clientids.PrefixIndex(pairs)

    def prefix_owner(self, client_id: str) -> acl.Owner | None:
        """The account whose client id prefix covers `client_id`, read fresh (one query)."""
        head = Substr(Value(client_id), 1, Length("client_id_prefix"))
        covering = (
            self.exclude(client_id_prefix="").alias(head=head).filter(head=F("client_id_prefix"))
        )
        username = covering.values_list("username", flat=True).first()
        return acl.Owner(username, acl.Owner.Why.PREFIX) if username else None


_LOGIN_FIELDS = (
    "id",
    "username",
    "password_hash",
    "credential",
    "is_active",
    "client_id",
    "client_id_prefix",
)


@functools.lru_cache(maxsize=256)
def _for_login_sql(prefixes: int) -> str:
    """for_login()'s query for a client id of `prefixes` characters: its prefix holder is the
    account whose prefix is one of the client id's own prefixes (an index probe each; no
    two accounts' prefixes overlap, so at most one matches)."""
    accounts = connection.ops.quote_name(Account._meta.db_table)
    claims = connection.ops.quote_name(ClientId._meta.db_table)
    columns = ", ".join(f"a.{connection.ops.quote_name(name)}" for name in _LOGIN_FIELDS)
    holder = "NULL"
    if prefixes:
        candidates = ", ".join(["%s"] * prefixes)
        holder = f"(SELECT p.username FROM {accounts} p WHERE p.client_id_prefix IN ({candidates}))"
    return f"""
        SELECT {columns},
            (SELECT o.username FROM {claims} c JOIN {accounts} o ON o.id = c.account_id
             WHERE c.client_id = %s),
            {holder}
        FROM {accounts} a WHERE a.username = %s
    """


class Credential(models.TextChoices):
    """Where an account's secret came from, which decides how it is stored (passwords.py)."""

    GENERATED = "generated", "generated secret"
    PASSWORD = "password", "chosen password"
    IMPORTED = "imported", "imported hash"


class Account(models.Model):
    username = models.CharField(
        max_length=names.MAX_LENGTH, unique=True, validators=[names.validate_username]
    )
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
        max_length=names.MAX_LENGTH,
        blank=True,
        validators=[names.validate_client_id],
        help_text="When set, only this client id may log in with this account, and no other "
        "account may use it.",
    )
    client_id_prefix = models.CharField(
        "client id prefix",
        max_length=names.MAX_LENGTH,
        blank=True,
        validators=[names.validate_client_id],
        help_text="When set, this account may only use client ids starting with it, and no "
        "other account may use those.",
    )
    description = models.TextField(blank=True)
    groups: models.ManyToManyField[Group, Membership] = models.ManyToManyField(
        "Group", through="Membership", related_name="accounts", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    changed_at = models.DateTimeField(auto_now=True)
    last_login_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = AccountQuerySet.as_manager()

    class Meta:
        ordering = ["username"]
        indexes = [
            # Every login looks for an account whose prefix starts its client id (for_login).
            models.Index(fields=["client_id_prefix"], name="account_client_id_prefix")
        ]

    def __str__(self) -> str:
        return self.username

    _loaded: dict[str, object]

    # Names made before the rules of names.py keep working: a value is checked only when it
    # changes (or is new), so an old account can still be edited in the admin and the UI.
    _NAMES = ("username", "client_id", "client_id_prefix")

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any) -> Account:
        account = super().from_db(db, field_names, values)
        loaded = zip(field_names, values, strict=True)
        account._loaded = {name: value for name, value in loaded if name in cls._NAMES}
        return account

    def _unchanged(self, name: str) -> bool:
        loaded = getattr(self, "_loaded", {})
        return name in loaded and loaded[name] == getattr(self, name)

    def clean_fields(self, exclude: Any = None) -> None:
        unchanged = {name for name in self._NAMES if self._unchanged(name)}
        super().clean_fields(exclude={*(exclude or ()), *unchanged})

    def clean(self) -> None:
        if not (self._unchanged("client_id") and self._unchanged("client_id_prefix")):
            self._check_client_ids()

    def _check_client_ids(self) -> None:
        """A bound id and a prefix must be free for this account (clientids.py). Taken ones
        are code "unique", as a taken username is: the API answers 409."""
        errors = {}
        bound, prefix = self.client_id, self.client_id_prefix
        if bound:
            owner = ClientId.objects.owner(bound)
            if owner is not None and owner.username != self.username:
                message = f"Client id {bound!r} is {owner.why} {owner.username!r}."
                if owner.why == acl.Owner.Why.CLAIMED:
                    message += " Release it first."
                errors["client_id"] = ValidationError(message, code="unique")
            elif prefix and not bound.startswith(prefix):
                # Against the account's kept binding or prefix, the request conflicts with
                # what exists (the API's 409); with both new in it, it is malformed (400).
                kept = self._unchanged("client_id") or self._unchanged("client_id_prefix")
                errors["client_id"] = ValidationError(
                    f"The bound client id must start with the prefix {prefix!r}.",
                    code="conflict" if kept else "invalid",
                )
        if prefix:
            if clientids.reserved_overlap(prefix) and self.username != settings.MONITOR_USERNAME:
                errors["client_id_prefix"] = ValidationError(
                    "This prefix covers client ids the service uses.", code="unique"
                )
            elif clash := self._prefix_clash(prefix):
                errors["client_id_prefix"] = ValidationError(clash, code="unique")
        if errors:
            raise ValidationError(errors)

    def _prefix_clash(self, prefix: str) -> str | None:
        others = Account.objects.exclude(pk=self.pk)
        for username, other in others.exclude(client_id_prefix="").values_list(
            "username", "client_id_prefix"
        ):
            if clientids.overlap(prefix, other):
                return f"This prefix overlaps {other!r}, the prefix of account {username!r}."
        bound = others.filter(client_id__startswith=prefix).values_list("username", flat=True)
        if holder := bound.first():
            return f"Account {holder!r} is bound to a client id under this prefix."
        return None

    # Changes. The admin (forms and actions), the UI, the API and the commands create accounts,
    # change passwords and enable or disable them only through these methods, so that what
    # goes with a change is written once: the password rules (passwords.validate), the
    # lockout reset, the claim of a bound client id, the policy note, `changed_at`, which
    # every process's policy_fingerprint() watches, and the note to the brokers that follow
    # the change feed (Change.objects.note_account), last.
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
        self._claim_bound_client_id()
        # A broker may have cached the refusals of this name (denials are cached too).
        Change.objects.note_account(self.username, kick=False, why="account created")
        return password

    def change_password(self, raw: str) -> None:
        """A password an operator chose (bcrypt)."""
        self._set_password(raw)
        self._save_credential()
        Change.objects.note_account(self.username, kick=True, why="password changed")

    def reset_password(self, secret: str = "") -> str:
        """Give the account a generated secret and return it, to be shown once: a new one,
        or `secret` made by passwords.generate() and kept by the caller."""
        secret = self._set_secret(secret)
        self._save_credential()
        Change.objects.note_account(self.username, kick=True, why="password reset")
        return secret

    def import_hash(self, stored: str) -> None:
        """Keep a hash from a mosquitto_passwd file as it is (`$6$` or `$7$`): the device's
        password does not change. Saves a new account too; its username is kept even where
        brokerauth/names.py refuses it for a new one (`x+y`, `site/7`), since the devices of
        that file already log in with it: an existing name, which keeps working."""
        if passwords.parse_mosquitto(stored) is None:
            raise ValidationError({"password_hash": "not a Mosquitto $6$ or $7$ hash"})
        self.password_hash, self.credential = stored, Credential.IMPORTED
        if self.pk is None:
            self._full_clean_keeping_name()
            self.save()
            self._claim_bound_client_id()
            Change.objects.note_account(self.username, kick=False, why="account imported")
        else:
            self._save_credential()

    def set_active(self, active: bool) -> None:
        """Enable or disable the account: a disabled one can neither log in nor pass a check."""
        self.is_active = active
        self.save(update_fields=["is_active", "changed_at"])
        why = "account enabled" if active else "account disabled"
        Change.objects.note_account(self.username, kick=not active, why=why)

    def edit(self, password: str = "", **fields: Any) -> None:
        """Save an operator's changes: the active flag through set_active(), a new password
        through change_password(), the other fields, validated, in one save. Every edit form
        (admin, UI) and the API's update come through here."""
        active = fields.pop("is_active", None)
        old_username = self.username
        for name, value in fields.items():
            setattr(self, name, value)
        if fields:
            others = [f.name for f in self._meta.fields if f.name not in fields]
            self.full_clean(exclude=others)
            self.save(update_fields=[*fields, "changed_at"])
            self._claim_bound_client_id()
            if old_username != self.username:
                # The old name is gone: its live sessions go with it.
                Change.objects.note_account(old_username, kick=True, why="account renamed")
            Change.objects.note_account(self.username, kick=False, why="account changed")
        if active is not None:
            self.set_active(active)
        if password:
            self.change_password(password)

    def unlock(self) -> None:
        """Forget the failed logins: not a policy change."""
        self.lockouts.all().delete()

    def release_client_id(self, client_id: str) -> None:
        """Give back a client id this account used, so that another account may claim it.
        Not the one it is bound to: change the binding first. The policy note makes every
        process forget the owners it remembered (brokerauth/policy.py)."""
        if client_id == self.client_id:
            raise ValidationError(
                f"{self.username} is bound to client id {client_id!r}: change its binding first.",
                code="conflict",
            )
        self.claimed_client_ids.filter(client_id=client_id).delete()
        Account.objects.filter(pk=self.pk).update(changed_at=timezone.now())
        scope, why = Change.Scope.CLIENT, "client id released"
        Change.objects.note(scope, client_id=client_id, username=self.username, why=why)

    def remove(self) -> None:
        """Delete the account; its live sessions go too."""
        username = self.username
        self.delete()
        Change.objects.note_account(username, kick=True, why="account deleted")

    def _full_clean_keeping_name(self) -> None:
        try:
            self.full_clean()
        except ValidationError as exc:
            errors = exc.update_error_dict({})
            kept = [e for e in errors.pop("username", []) if e.code != names.INVALID]
            if kept:
                errors["username"] = kept
            if errors:
                raise ValidationError(errors) from exc

    def _set_password(self, raw: str) -> None:
        """A new password (not saved)."""
        passwords.validate(raw)
        self.password_hash, self.credential = passwords.hash_password(raw), Credential.PASSWORD

    def _set_secret(self, secret: str) -> str:
        secret = secret or passwords.generate()
        if not passwords.looks_generated(secret):
            raise ValueError("a generated secret comes from passwords.generate()")
        self.password_hash, self.credential = passwords.hash_secret(secret), Credential.GENERATED
        return secret

    def _save_credential(self) -> None:
        """Save a new secret; it also lifts the lockouts the old one earned."""
        self.save(update_fields=["password_hash", "credential", "changed_at"])
        self.unlock()

    def _claim_bound_client_id(self) -> None:
        if self.client_id and clientids.claimable(self.client_id):
            ClientId.objects.claim(self.client_id, account_id=self.pk, username=self.username)

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

    def client_id_refusal(
        self, clientid: str, owner: acl.Owner | None, *, claim: bool = False
    ) -> str | None:
        """Why this account may not use `clientid` now (acl.client_id_refusal), given its
        owner as just read; with `claim`, a free id becomes this account's (a login)."""
        bound, prefix = self.client_id, self.client_id_prefix
        refusal = acl.client_id_refusal(self.username, clientid, bound=bound, prefix=prefix)
        if refusal is not None:
            return refusal
        if owner is None and claim and clientids.claimable(clientid):
            owner = ClientId.objects.claim(clientid, account_id=self.pk, username=self.username)
        return acl.client_id_refusal(self.username, clientid, owner=owner)

    def record_success(self, now: datetime, lockout: Lockout | None = None) -> None:
        # Not save(): login bookkeeping must not look like a policy change. Written out, as
        # for_login(): every login runs it.
        self.last_login_at = now
        table = connection.ops.quote_name(Account._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET last_login_at = %s WHERE id = %s",
                [connection.ops.adapt_datetimefield_value(now), self.pk],
            )
        if lockout is not None:
            lockout.delete()


class ClientIdQuerySet(models.QuerySet["ClientId"]):
    def owner(self, client_id: str) -> acl.Owner | None:
        """Whom `client_id` belongs to, read fresh (brokerauth/clientids.py)."""
        return clientids.owner(client_id, Account.objects.prefix_owner, self.claimed_by)

    def claimed_by(self, client_id: str) -> str | None:
        """The username of the account that claimed `client_id`, if one did (one query)."""
        rows = self.filter(client_id=client_id).values_list("account__username", flat=True)
        return rows.first()

    def claimant_of(self, client_id: Any) -> Subquery:
        """claimed_by() as a subquery, to annotate rows with a client id (an OuterRef)."""
        return Subquery(self.filter(client_id=client_id).values("account__username")[:1])

    def claim(self, client_id: str, *, account_id: int, username: str) -> acl.Owner:
        """Make a free client id this account's; returns its owner then (another account,
        if one claimed it first). One statement, no transaction of its own: a first login
        pays for it (ON CONFLICT, SQLite 3.24+ and PostgreSQL alike)."""
        table = connection.ops.quote_name(ClientId._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (client_id, account_id, created_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (client_id) DO NOTHING",
                [client_id, account_id, connection.ops.adapt_datetimefield_value(timezone.now())],
            )
            if cursor.rowcount == 1:
                return acl.Owner(username)
        winner = self.claimed_by(client_id)
        return acl.Owner(winner if winner is not None else username)


class ClientId(models.Model):
    """A client id and the account it belongs to (brokerauth/clientids.py): the first to use
    it, or the one bound to it, until an operator releases it (Account.release_client_id).
    Claimed at logins, not a policy change: policy_fingerprint() does not watch this table, so
    a reconnect storm of new devices flushes no process's cache."""

    client_id = models.CharField(max_length=names.MAX_LENGTH, unique=True)
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="claimed_client_ids"
    )
    created_at = models.DateTimeField("claimed at", default=timezone.now)

    objects = ClientIdQuerySet.as_manager()

    class Meta:
        verbose_name = "client id"
        ordering = ["client_id"]

    def __str__(self) -> str:
        return f"{self.client_id} ({self.account})"

    def release(self) -> None:
        self.account.release_client_id(self.client_id)


class LockoutManager(models.Manager["Lockout"]):
    def fail(self, account: Account, source: str, lockout: Lockout | None, now: datetime) -> None:
        """One more failed login of `account` from `source` (`lockout`: its row, if any)."""
        failures = 1
        if lockout is not None and not lockout.stale(now):
            failures = lockout.failures + 1
        self.update_or_create(
            account=account,
            source=source,
            defaults={
                "failures": failures,
                "last_failure_at": now,
                "locked_until": Lockout.lock_after(failures, now),
            },
        )

    def prune(self, now: datetime) -> int:
        """Forget the failures that no longer count (prune_audit runs it)."""
        window = timedelta(seconds=settings.LOGIN_LOCKOUT_WINDOW_SECONDS)
        quiet = Q(last_failure_at__lt=now - window) & (
            Q(locked_until__isnull=True) | Q(locked_until__lt=now)
        )
        deleted, _ = self.filter(quiet).delete()
        return deleted


class Lockout(models.Model):
    """Failed logins of one account with a guessable secret from one source: the client's
    address (IPv6 by /64, as the plugin's limiter groups them), or every address ("") when the
    broker does not say which (go-auth): then the lockout is per username.

    The rule: after LOGIN_LOCKOUT_THRESHOLD failures, each further one locks that source out
    for LOGIN_LOCKOUT_BASE_SECONDS * 2**extra, at most LOGIN_LOCKOUT_MAX_SECONDS; a good login
    or a new password starts again, and so does a failure more than
    LOGIN_LOCKOUT_WINDOW_SECONDS after the previous one, so that a wrong password now and then
    never adds up to a lock. A locked source is refused before its password is read."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="lockouts")
    source = models.CharField(max_length=64, blank=True, help_text="Empty: every address.")
    failures = models.PositiveIntegerField(default=0)
    last_failure_at = models.DateTimeField()
    locked_until = models.DateTimeField(null=True, blank=True)

    objects = LockoutManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "source"], name="unique_lockout_source")
        ]

    def __str__(self) -> str:
        return f"{self.account} from {self.source or 'any address'}: {self.failures} failures"

    @staticmethod
    def source_of(address: str) -> str:
        """The source failures are counted under; "" (every address) for an empty or
        unreadable one."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return ""
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
        return str(ip)

    @staticmethod
    def lock_after(failures: int, now: datetime) -> datetime | None:
        """When a source with this many failures in a row unlocks (None: not locked)."""
        extra = failures - settings.LOGIN_LOCKOUT_THRESHOLD
        if extra < 0:
            return None
        seconds = min(
            settings.LOGIN_LOCKOUT_BASE_SECONDS * 2 ** min(extra, 30),
            settings.LOGIN_LOCKOUT_MAX_SECONDS,
        )
        return now + timedelta(seconds=seconds)

    def locks(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def stale(self, now: datetime) -> bool:
        window = timedelta(seconds=settings.LOGIN_LOCKOUT_WINDOW_SECONDS)
        return not self.locks(now) and self.last_failure_at < now - window

    def describe(self) -> str:
        """Read by operators on the audit page: to the second, in UTC."""
        where = f"from {self.source}" if self.source else "from any address"
        until = f"{self.locked_until:%Y-%m-%d %H:%M:%S} UTC"
        return f"locked after {self.failures} failed logins {where} until {until}"


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


@functools.cache
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    names = ", ".join(quote(column) for column in columns)
    return f"INSERT INTO {quote(table)} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"


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
        address: str = "",
    ) -> None:
        """The audit of one decision: a line on the `brokerauth.decision` logger and a row for
        every login and every denial, saying which broker asked (AuthEvent.Broker). An allowed
        ACL check is logged at DEBUG only and never written: it is the hot path. `address`: the
        client's, when the broker says."""
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
            "%s %s broker=%s user=%.100r client=%.100r address=%.64s acc=%s topic=%.200r: %s",
            kind,
            "allow" if verdict.allowed else "deny",
            broker,
            username,
            clientid,
            address,
            access,
            topic,
            verdict.reason,
        )
        # One statement written out, not create(): every login writes a row, and the ORM's
        # insert cost twice the database's time (docs/benchmarks.md, "Cold-login storm").
        row = {
            "created_at": connection.ops.adapt_datetimefield_value(timezone.now()),
            "kind": kind,
            "broker": broker,
            "username": username[:255],
            "client_id": clientid[:255],
            "address": address[:64],
            "topic": topic[:1024],
            "access": access,
            "allowed": verdict.allowed,
            "reason": verdict.reason[:500],
        }
        with connection.cursor() as cursor:
            cursor.execute(_insert_sql(AuthEvent._meta.db_table, tuple(row)), list(row.values()))

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
    address = models.CharField(max_length=64, blank=True, help_text="Sent by the project's plugin.")
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


@dataclass(frozen=True)
class Feed:
    """One answer of the change feed (GET /mqtt/auth/changes): the newest seq, whether the
    follower must drop everything it remembers (`reset`), and what changed after its seq."""

    seq: int
    reset: bool
    changes: list[Change]


class ChangeManager(models.Manager["Change"]):
    def note(
        self,
        scope: str,
        *,
        username: str = "",
        client_id: str = "",
        kick: bool = False,
        why: str = "",
    ) -> Change:
        """Tell the brokers that follow the feed what just changed. Written last, after the
        change itself and in its transaction: a broker that reads the note and asks again
        must read the new policy. The table lock (PostgreSQL) makes seqs commit in order, so
        a follower that has seen seq n never misses a smaller one committed later."""
        with transaction.atomic():
            if connection.vendor == "postgresql":
                table = connection.ops.quote_name(Change._meta.db_table)
                with connection.cursor() as cursor:
                    cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
            return self.create(
                scope=scope,
                username=username[:255],
                client_id=client_id[:255],
                kick=kick,
                why=why[:200],
            )

    def note_account(self, username: str, *, kick: bool, why: str) -> Change:
        return self.note(Change.Scope.ACCOUNT, username=username, kick=kick, why=why)

    def note_policy(self, why: str) -> Change:
        """Rules, groups or memberships changed: every cached decision may be wrong."""
        return self.note(Change.Scope.ALL, why=why)

    def disconnect(self, client_id: str, *, why: str = "operator disconnect") -> Change:
        """Ask every following broker to kick the session of `client_id`."""
        return self.note(Change.Scope.CLIENT, client_id=client_id, kick=True, why=why)

    def feed(self, after: int | None, limit: int = 1000) -> Feed:
        """What changed after seq `after`. `reset` when the follower has no seq, or one from
        another database (newer than the newest), or one the kept notes no longer cover
        completely (pruned): then the notes that are kept come along, for their kicks."""
        newest = self.order_by("-seq").values_list("seq", flat=True).first() or 0
        if after is None or after > newest:
            return Feed(newest, True, [])
        changes = list(self.filter(seq__gt=after).order_by("seq")[:limit])
        reset = after < self._oldest_covered()
        return Feed(changes[-1].seq if changes else after, reset, changes)

    def _oldest_covered(self) -> int:
        """The smallest `after` the kept rows answer completely."""
        oldest = self.order_by("seq").values_list("seq", flat=True).first()
        return 0 if oldest is None else oldest - 1

    def prune(self, now: datetime) -> int:
        """Forget changes older than CHANGE_FEED_RETENTION_SECONDS, but never the newest:
        it carries the seq followers continue from."""
        cutoff = now - timedelta(seconds=settings.CHANGE_FEED_RETENTION_SECONDS)
        newest = self.order_by("-seq").values_list("seq", flat=True).first()
        if newest is None:
            return 0
        deleted, _ = self.filter(created_at__lt=cutoff, seq__lt=newest).delete()
        return deleted


class Change(models.Model):
    """A note for the brokers that follow the change feed (mosquitto/plugin/feed.c): what
    changed, so that they drop cached decisions at once instead of after their cache TTL,
    and whether live sessions must go (`kick`: a disabled or deleted account, a new
    password, an operator's Disconnect)."""

    class Scope(models.TextChoices):
        ALL = "all"
        ACCOUNT = "account"
        CLIENT = "client"

    seq = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    scope = models.CharField(max_length=10, choices=Scope.choices)
    username = models.CharField(max_length=255, blank=True)
    client_id = models.CharField(max_length=255, blank=True)
    kick = models.BooleanField(default=False)
    why = models.CharField(max_length=200, blank=True)

    objects = ChangeManager()

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.scope} {self.username or self.client_id} {self.why}"

    def as_wire(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "scope": self.scope,
            "username": self.username,
            "client_id": self.client_id,
            "kick": self.kick,
            "why": self.why,
        }


class FollowerQuerySet(models.QuerySet["Follower"]):
    def polled(self, name: str, address: str, agent: str, seq: int) -> None:
        """A broker asked the feed (one write per long poll). Two brokers under one name
        (`http_changes_name` defaults to the host name) share a row."""
        values = {"address": address[:64], "user_agent": agent[:100], "seq": seq}
        values["polled_at"] = timezone.now()
        try:
            with transaction.atomic():
                self.update_or_create(name=name[:100], defaults=values)
        except IntegrityError:  # the other one's first poll inserted it meanwhile
            self.filter(name=name[:100]).update(**values)

    def reach(self) -> str:
        """What a Disconnect or a revocation reaches now, in the words of the UI and API."""
        live = list(self.live())
        if not live:
            return (
                "No broker follows the change feed: Disconnect needs the project's Mosquitto "
                "plugin (mosquitto/plugin, http_changes_uri). go-auth cannot follow it: there "
                "a revoked account's session goes on, and cached decisions last their TTL."
            )
        names = ", ".join(follower.name for follower in live)
        return f"Reaches {len(live)} broker(s) that follow the change feed: {names}."

    def live(self) -> FollowerQuerySet:
        """Followers that polled recently enough to still be following: a long poll lasts
        at most CHANGE_FEED_MAX_WAIT seconds, and the plugin asks again at once."""
        since = timezone.now() - timedelta(seconds=settings.CHANGE_FEED_MAX_WAIT + 30)
        return self.filter(polled_at__gte=since)


class Follower(models.Model):
    """A broker that follows the change feed, and when it last asked: the UI says from this
    whether a Disconnect reaches a broker (go-auth never follows)."""

    name = models.CharField(max_length=100, unique=True)
    address = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=100, blank=True)
    seq = models.BigIntegerField(default=0)
    polled_at = models.DateTimeField()

    objects = FollowerQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.address}) at seq {self.seq}"
