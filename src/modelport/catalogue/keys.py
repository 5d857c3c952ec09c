"""API keys: generated, shown once, stored as a hash.

Keys are 256-bit random tokens, so a fast hash (SHA-256) is the right tool: slow
password hashes (argon2, bcrypt) defend low-entropy secrets against guessing, which
cannot succeed against 2^256, and they would add tens of milliseconds to every request.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "mp_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:10]
