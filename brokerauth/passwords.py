"""bcrypt hashes of MQTT account passwords, and the memory of recent good verifications.

bcrypt is slow on purpose (about 0.2 s at cost 12), and a fleet reconnecting after a broker
restart logs in all at once. A successful verification is remembered for
LOGIN_REMEMBER_SECONDS, keyed on the stored hash, so a changed password is never served from
memory. Only a keyed digest of the password is kept, never the password itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from functools import lru_cache

import bcrypt
from django.conf import settings
from django.core.exceptions import ValidationError

# bcrypt only reads the first 72 bytes; bcrypt 5 raises on longer input, so refuse them.
MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_LENGTH = 8
_memory: dict[tuple[str, str], tuple[bytes, float]] = {}
_memory_lock = threading.Lock()
_MEMORY_LIMIT = 100_000
_PEPPER = secrets.token_bytes(32)  # per process: the digests are useless outside it


class PasswordTooLong(ValueError):
    pass


def validate(raw: str) -> None:
    """The rules for every password an account is given (admin, UI, API, commands):
    ValidationError when it is too short or longer than bcrypt reads."""
    if len(raw) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"Passwords have at least {MIN_PASSWORD_LENGTH} characters.")
    if len(raw.encode()) > MAX_PASSWORD_BYTES:
        raise ValidationError(f"Passwords are limited to {MAX_PASSWORD_BYTES} bytes (bcrypt).")


def generate() -> str:
    """A password for a new or reset account: 144 random bits, shown once."""
    return secrets.token_urlsafe(18)


def make_hash(raw: str) -> str:
    data = raw.encode()
    if len(data) > MAX_PASSWORD_BYTES:
        raise PasswordTooLong(f"passwords are limited to {MAX_PASSWORD_BYTES} bytes")
    return bcrypt.hashpw(data, bcrypt.gensalt(settings.BCRYPT_ROUNDS)).decode()


@lru_cache(maxsize=1)
def _dummy_hash(rounds: int) -> bytes:
    return bcrypt.hashpw(b"not a real password", bcrypt.gensalt(rounds))


def burn(raw: str) -> None:
    """Spend the time of a real verification, so unknown usernames cost the same."""
    bcrypt.checkpw(raw.encode()[:MAX_PASSWORD_BYTES], _dummy_hash(settings.BCRYPT_ROUNDS))


def verify(raw: str, stored: str) -> bool:
    data = raw.encode()
    if not stored.startswith("$2") or len(data) > MAX_PASSWORD_BYTES:
        burn(raw)
        return False
    try:
        return bcrypt.checkpw(data, stored.encode())
    except ValueError:  # a corrupt stored hash
        return False


def verify_login(username: str, raw: str, stored: str) -> bool:
    """verify(), answered from memory when this password verified recently; a good
    verification is remembered for LOGIN_REMEMBER_SECONDS."""
    if remembered(username, raw, stored):
        return True
    if not verify(raw, stored):
        return False
    remember(username, raw, stored)
    return True


def _digest(raw: str, stored: str) -> bytes:
    return hmac.new(_PEPPER, f"{stored}\0{raw}".encode(), hashlib.sha256).digest()


def remembered(username: str, raw: str, stored: str) -> bool:
    entry = _memory.get((username, stored))
    if entry is None or entry[1] < time.monotonic():
        return False
    return hmac.compare_digest(entry[0], _digest(raw, stored))


def remember(username: str, raw: str, stored: str) -> None:
    seconds = settings.LOGIN_REMEMBER_SECONDS
    if seconds <= 0:
        return
    with _memory_lock:
        if len(_memory) >= _MEMORY_LIMIT:
            _memory.clear()
        _memory[(username, stored)] = (_digest(raw, stored), time.monotonic() + seconds)


def forget_all() -> None:
    _memory.clear()
