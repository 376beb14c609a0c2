"""Demo devices of the local stack (bin/run): MQTT accounts with the usual device rule,
`devices/%u/#` with all access, and one shared password kept in VAR_DIR/demo-password (0600),
so that the README's mosquitto_pub example and `simulate_devices` can log in.

`manage.py local_bootstrap` makes the `demo` device, `manage.py simulate_devices
--create-accounts` makes `demo-01`, `demo-02`, ...: both through `ensure_device()`.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from brokerauth import passwords
from brokerauth.acl import Access
from brokerauth.models import Account, Change, Rule
from web import secretfile

PASSWORD_FILE = "demo-password"


def password_path() -> Path:
    return Path(settings.VAR_DIR) / PASSWORD_FILE


def shared_password(*, create: bool) -> str | None:
    """The demo devices' password from its file; when there is none (or an older, shorter
    one that is not a generated secret), a new one written there if `create`, else None."""
    path = password_path()
    if path.exists():
        password = path.read_text().strip()
        if passwords.looks_generated(password) or not create:
            return password
    elif not create:
        return None
    password = passwords.generate()
    secretfile.write(path, password)
    return password


def ensure_device(name: str, password: str) -> bool:
    """The demo account `name`, with its rule and this password; True when it was created or
    its password changed."""
    account = Account.objects.filter(username=name).first()
    if account is None:
        account = Account(username=name, description="Demo device of the local stack")
        account.save_new(password, generated=passwords.looks_generated(password))
        Rule.objects.create(account=account, pattern="devices/%u/#", access=Access.ALL)
        Change.objects.note_account(name, kick=False, why="demo device rule added")
        return True
    if account.check_password(password):
        return False
    if passwords.looks_generated(password):
        account.reset_password(password)
    else:  # an older demo password, from before they were all generated secrets
        account.change_password(password)
    return True
