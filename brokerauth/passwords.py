"""Account credentials: how a secret is stored and checked, and how fast.

A CONNECT waits in the broker's single event loop for the answer, so a slow hash is a
fleet-wide stall (issue 14). What is stored depends on where the secret came from:

- a generated secret (`generate()`: 144 random bits, shown once) can be neither guessed
  online nor cracked offline, so it needs no slow hash: PBKDF2-SHA512 in Mosquitto's own
  `$7$` format (101 iterations and a 12-byte salt, as `mosquitto_passwd` writes it), about
  40 µs to verify, and readable by a plain Mosquitto's `password_file`;
- a password an operator chose keeps bcrypt (`$2b$`, BCRYPT_ROUNDS), tens of milliseconds;
  a good verification is remembered for LOGIN_REMEMBER_SECONDS (keyed on the stored hash,
  so a changed password is never served from memory; only a keyed digest is kept);
- a hash imported from a `mosquitto_passwd` file (`$6$` salted SHA-512, `$7$`) verifies as
  it is, so a fleet moves in without a password reset.

Passwords are bytes on the wire (MQTT allows any binary password); `as_bytes()` turns what
the broker sent back into those bytes. Unknown usernames cost one `$7$` verification
(`burn()`), the same as a generated secret, so an unknown name and a device account look
alike in time; an account with a chosen password is slower, and that is what the lockout and
the plugin's limiter protect.
"""

from __future__ import annotations

import base64
import binascii
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
# Mosquitto's mosquitto_passwd defaults (src/password_mosq.h): the same hash either side.
PBKDF2_ITERATIONS = 101
PBKDF2_SALT_BYTES = 12
# A stored hash asking for more work than this is refused: an imported file must not be
# able to make one login cost seconds of the broker's event loop.
MAX_PBKDF2_ITERATIONS = 100_000
_memory: dict[tuple[str, str], tuple[bytes, float]] = {}
_memory_lock = threading.Lock()
_MEMORY_LIMIT = 100_000
_PEPPER = secrets.token_bytes(32)  # per process: the digests are useless outside it


class PasswordTooLong(ValueError):
    pass


def validate(raw: str) -> None:
    """The rules for every password an operator gives an account (admin, UI, API,
    commands): ValidationError when too short, longer than bcrypt reads, or holding a NUL."""
    if len(raw) < MIN_PASSWORD_LENGTH:
        raise ValidationError(f"Passwords have at least {MIN_PASSWORD_LENGTH} characters.")
    if "\0" in raw:
        raise ValidationError("Passwords cannot contain a NUL character.")
    try:
        size = len(raw.encode())
    except UnicodeEncodeError as exc:
        raise ValidationError("Passwords must be valid Unicode text.") from exc
    if size > MAX_PASSWORD_BYTES:
        raise ValidationError(f"Passwords are limited to {MAX_PASSWORD_BYTES} bytes (bcrypt).")


def generate() -> str:
    """A secret for a new or reset account: 144 random bits, shown once."""
    return secrets.token_urlsafe(18)


def looks_generated(secret: str) -> bool:
    """Does `secret` have the shape of generate()'s output (24 URL-safe characters or more)?"""
    return len(secret) >= 24 and all(c.isascii() and (c.isalnum() or c in "-_") for c in secret)


def as_bytes(raw: str | bytes) -> bytes:
    """The password bytes the device sent. JSON carries text: bytes that were not UTF-8
    arrive as lone surrogates (surrogateescape, see brokerauth/wire.py) and go back to the
    original bytes; a lone surrogate written as a JSON escape has no byte form but its own."""
    if isinstance(raw, bytes):
        return raw
    try:
        return raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return raw.encode("utf-8", "surrogatepass")


# -- making hashes ---------------------------------------------------------------------------
def hash_password(raw: str) -> str:
    """bcrypt, for a password a person chose."""
    data = raw.encode()
    if len(data) > MAX_PASSWORD_BYTES:
        raise PasswordTooLong(f"passwords are limited to {MAX_PASSWORD_BYTES} bytes")
    return bcrypt.hashpw(data, bcrypt.gensalt(settings.BCRYPT_ROUNDS)).decode()


def hash_secret(raw: str | bytes, salt: bytes | None = None) -> str:
    """Mosquitto's `$7$` PBKDF2-SHA512, for a generated secret (or any bytes, as
    mosquitto_passwd would hash them)."""
    salt = salt if salt is not None else secrets.token_bytes(PBKDF2_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", as_bytes(raw), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"


def algorithm(stored: str) -> str:
    """What an operator is told about a stored hash."""
    if stored.startswith("$7$"):
        return "PBKDF2-SHA512 ($7$)"
    if stored.startswith("$6$"):
        return "salted SHA-512 ($6$)"
    if stored.startswith("$2"):
        return "bcrypt"
    return "unreadable"


def mosquitto_can_read(stored: str) -> bool:
    """Would a plain Mosquitto's password_file accept this hash (import, export)? Mosquitto
    2.0 also wants a salt of exactly 12 bytes, or it removes the entry."""
    parsed = parse_mosquitto(stored)
    return parsed is not None and len(parsed[2]) == PBKDF2_SALT_BYTES


# -- checking --------------------------------------------------------------------------------
def verify(raw: str | bytes, stored: str) -> bool:
    """Does `raw` match the stored hash? False for a corrupt or unknown hash, never raises."""
    data = as_bytes(raw)
    if stored.startswith("$2"):
        return _verify_bcrypt(data, stored)
    parsed = parse_mosquitto(stored)
    if parsed is None:
        burn(data)
        return False
    kind, iterations, salt, digest = parsed
    if kind == "7":
        mine = hashlib.pbkdf2_hmac("sha512", data, salt, iterations)
    else:
        mine = hashlib.sha512(data + salt).digest()
    # No secret holds a NUL (generate() never makes one, mosquitto_passwd reads C strings),
    # and PBKDF2's HMAC pads its key with NULs: "pw\0" would pass for "pw".
    return hmac.compare_digest(mine, digest) and b"\0" not in data


def verify_login(username: str, raw: str | bytes, stored: str) -> bool:
    """verify(); for bcrypt answered from memory when this password verified recently."""
    if not stored.startswith("$2"):
        return verify(raw, stored)
    data = as_bytes(raw)
    if remembered(username, data, stored):
        return True
    if not verify(data, stored):
        return False
    remember(username, data, stored)
    return True


def burn(raw: str | bytes) -> None:
    """Spend the time of verifying a generated secret: unknown usernames cost the same."""
    _, iterations, salt, _digest = _dummy()
    hashlib.pbkdf2_hmac("sha512", as_bytes(raw), salt, iterations)


def parse_mosquitto(stored: str) -> tuple[str, int, bytes, bytes] | None:
    """`$7$<iterations>$<salt>$<hash>` or `$6$<salt>$<hash>` (base64), as mosquitto_passwd
    writes them; None for anything else."""
    parts = stored.split("$")
    try:
        if len(parts) == 5 and parts[:2] == ["", "7"] and parts[2].isdigit():
            iterations = int(parts[2])
            salt, digest = _unb64(parts[3]), _unb64(parts[4])
            if 1 <= iterations <= MAX_PBKDF2_ITERATIONS and salt and len(digest) == 64:
                return "7", iterations, salt, digest
        if len(parts) == 4 and parts[:2] == ["", "6"]:
            salt, digest = _unb64(parts[2]), _unb64(parts[3])
            if salt and len(digest) == 64:
                return "6", 1, salt, digest
    except (binascii.Error, ValueError):
        return None
    return None


def _verify_bcrypt(data: bytes, stored: str) -> bool:
    if len(data) > MAX_PASSWORD_BYTES or b"\0" in data:
        # bcrypt stops at NUL and at 72 bytes: such input can only match by truncation.
        bcrypt.checkpw(data.replace(b"\0", b"")[:MAX_PASSWORD_BYTES], _dummy_bcrypt())
        return False
    try:
        return bcrypt.checkpw(data, stored.encode())
    except ValueError:  # a corrupt stored hash
        return False


@lru_cache(maxsize=1)
def _dummy() -> tuple[str, int, bytes, bytes]:
    parsed = parse_mosquitto(hash_secret("not a real secret"))
    assert parsed is not None
    return parsed


@lru_cache(maxsize=1)
def _dummy_bcrypt() -> bytes:
    return bcrypt.hashpw(b"not a real password", bcrypt.gensalt(settings.BCRYPT_ROUNDS))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# -- remembered bcrypt verifications ---------------------------------------------------------
def _digest(raw: bytes, stored: str) -> bytes:
    return hmac.new(_PEPPER, stored.encode() + b"\0" + raw, hashlib.sha256).digest()


def remembered(username: str, raw: bytes, stored: str) -> bool:
    entry = _memory.get((username, stored))
    if entry is None or entry[1] < time.monotonic():
        return False
    return hmac.compare_digest(entry[0], _digest(raw, stored))


def remember(username: str, raw: bytes, stored: str) -> None:
    seconds = settings.LOGIN_REMEMBER_SECONDS
    if seconds <= 0:
        return
    with _memory_lock:
        if len(_memory) >= _MEMORY_LIMIT:
            _memory.clear()
        _memory[(username, stored)] = (_digest(raw, stored), time.monotonic() + seconds)


def forget_all() -> None:
    _memory.clear()
