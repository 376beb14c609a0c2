"""Client ids belong to accounts; lockouts per (account, source); names validated; the
audit keeps the client's address (issues 9 and 14).

Existing lockouts move to per-username rows (source ""), bound client ids become claims of
their accounts (the first account bound to an id, when two were).
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import brokerauth.names


def forward(apps, schema_editor):
    Account = apps.get_model("brokerauth", "Account")
    Lockout = apps.get_model("brokerauth", "Lockout")
    ClientId = apps.get_model("brokerauth", "ClientId")
    now = django.utils.timezone.now()
    Lockout.objects.bulk_create(
        Lockout(
            account_id=account.pk,
            source="",
            failures=account.failed_logins,
            last_failure_at=account.locked_until or now,
            locked_until=account.locked_until,
        )
        for account in Account.objects.filter(failed_logins__gt=0)
    )
    claimed = set()
    for account in Account.objects.exclude(client_id="").order_by("pk"):
        if account.client_id not in claimed and len(account.client_id) <= 255:
            claimed.add(account.client_id)
            ClientId.objects.create(client_id=account.client_id, account_id=account.pk)


def backward(apps, schema_editor):
    Account = apps.get_model("brokerauth", "Account")
    Lockout = apps.get_model("brokerauth", "Lockout")
    for lockout in Lockout.objects.filter(source=""):
        Account.objects.filter(pk=lockout.account_id).update(
            failed_logins=lockout.failures, locked_until=lockout.locked_until
        )


class Migration(migrations.Migration):
    dependencies = [
        ("brokerauth", "0003_authevent_broker"),
    ]

    operations = [
        migrations.AddField(
            model_name="account",
            name="client_id_prefix",
            field=models.CharField(
                blank=True,
                help_text="When set, this account may only use client ids starting with it, and no other account may use those.",
                max_length=255,
                validators=[brokerauth.names.validate_client_id],
                verbose_name="client id prefix",
            ),
        ),
        migrations.AddField(
            model_name="authevent",
            name="address",
            field=models.CharField(
                blank=True, help_text="Sent by the project's plugin.", max_length=64
            ),
        ),
        migrations.AlterField(
            model_name="account",
            name="client_id",
            field=models.CharField(
                blank=True,
                help_text="When set, only this client id may log in with this account, and no other account may use it.",
                max_length=255,
                validators=[brokerauth.names.validate_client_id],
                verbose_name="bound client id",
            ),
        ),
        migrations.AlterField(
            model_name="account",
            name="username",
            field=models.CharField(
                max_length=255, unique=True, validators=[brokerauth.names.validate_username]
            ),
        ),
        migrations.CreateModel(
            name="ClientId",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("client_id", models.CharField(max_length=255, unique=True)),
                (
                    "created_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now, verbose_name="claimed at"
                    ),
                ),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="claimed_client_ids",
                        to="brokerauth.account",
                    ),
                ),
            ],
            options={
                "verbose_name": "client id",
                "ordering": ["client_id"],
            },
        ),
        migrations.CreateModel(
            name="Lockout",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "source",
                    models.CharField(blank=True, help_text="Empty: every address.", max_length=64),
                ),
                ("failures", models.PositiveIntegerField(default=0)),
                ("last_failure_at", models.DateTimeField()),
                ("locked_until", models.DateTimeField(blank=True, null=True)),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="lockouts",
                        to="brokerauth.account",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("account", "source"), name="unique_lockout_source"
                    )
                ],
            },
        ),
        migrations.RunPython(forward, backward),
        migrations.RemoveField(
            model_name="account",
            name="failed_logins",
        ),
        migrations.RemoveField(
            model_name="account",
            name="locked_until",
        ),
        migrations.AddIndex(
            model_name="account",
            index=models.Index(fields=["client_id_prefix"], name="account_client_id_prefix"),
        ),
    ]
