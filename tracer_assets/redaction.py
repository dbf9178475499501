"""Keeping secrets out of texts and records: the one redaction of the project (pure Python).

A secret (an API key, an exchange secret, a webhook URL, a bot token) is cut out of a text in
every form it may show up in (`secret_variants`): itself, URL-encoded, and for a URL its path
(with the query), every long path segment or query value and its password, because error
texts often quote only the path. `prepare_secrets` turns the registered values into those
forms once, longest first (so a whole URL is replaced before its parts); `redact_text` replaces
them by "[redacted]" in a text; `redact` does it in any JSON-like structure, and also replaces
the value of every secret-looking key (`SECRET_KEY_PATTERN`).

A secret shorter than `MIN_SECRET_LENGTH` is refused by default: cutting a 3-character string
out of every text would mangle it, and no real key, token or webhook URL is that short. Callers
that must never raise say what to do with one instead (`too_short="skip"` or `"keep"`).

Used by the audit files (`trading/audit.py`), the notifications (`notify.py`) and the
LLM client (`tracer_assets/llm`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Literal
from urllib.parse import quote, urlsplit

__all__ = [
    "MIN_SECRET_LENGTH",
    "MIN_URL_PART_LENGTH",
    "REDACTED",
    "SECRET_KEY_PATTERN",
    "is_secret_key",
    "prepare_secrets",
    "redact",
    "redact_prepared",
    "redact_text",
    "secret_variants",
]

REDACTED = "[redacted]"

# A key whose name contains any of these words (any case, anywhere in the name) holds a
# secret: `api_key`, `ANTHROPIC_API_KEY`, `secret`, `telegram_bot_token`, `password`,
# `passphrase`, `discord_webhook_url`, `credentials`, `Authorization`. Deliberately broad
# (`max_tokens`, `sort_key` match too): a harmless value hidden costs less than a key shown.
SECRET_KEY_PATTERN = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSPHRASE|WEBHOOK|CREDENTIAL|AUTHORIZATION", re.IGNORECASE)
# A registered secret shorter than this is refused: cutting a 3-character string out of every
# text would mangle the log, and no real key, token or webhook URL is that short.
MIN_SECRET_LENGTH = 8
# Path segments / query values of a secret URL at least this long are secrets on their own
# (a Discord webhook token, a Telegram bot token), because error texts often quote only the path.
MIN_URL_PART_LENGTH = 16

_KEPT_UNDER_SECRET_KEY = (type(None), bool, int, float, Decimal)  # not secrets: counts, flags


def is_secret_key(key: object) -> bool:
    """True when a mapping key's name marks its value as a secret (SECRET_KEY_PATTERN)."""
    return isinstance(key, str) and SECRET_KEY_PATTERN.search(key) is not None


def secret_variants(secret: str) -> set[str]:
    """The forms in which a secret may show up in a text: itself, URL-encoded, and for a URL
    its path (with query) and every long path segment or query value (a webhook's token)."""
    variants = {secret, quote(secret, safe=""), quote(secret)}
    parts = urlsplit(secret)
    if parts.scheme in ("http", "https") and parts.netloc:
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
        variants.add(tail)
        variants.update(p for p in parts.path.split("/") if len(p) >= MIN_URL_PART_LENGTH)
        for pair in parts.query.split("&"):
            value = pair.partition("=")[2]
            if len(value) >= MIN_URL_PART_LENGTH:
                variants.add(value)
        if parts.password:
            variants.add(parts.password)
    return {v for v in variants if len(v) >= MIN_SECRET_LENGTH}


def prepare_secrets(
    secrets: Iterable[str | None], *, too_short: Literal["raise", "skip", "keep"] = "raise"
) -> tuple[str, ...]:
    """The secrets and their variants, longest first (so a whole URL is replaced before its
    parts). None and "" mean "not configured" and are skipped.

    A secret shorter than MIN_SECRET_LENGTH (blanks around it not counted): `"raise"` refuses
    it with a ValueError giving its length, never its value (a short secret registered by
    the caller is a bug); `"skip"` leaves it out (it cannot be told apart from ordinary words);
    `"keep"` cuts it exactly as it is, without variants (a junk-short configured value must
    still not be shown). A value that is not a string is a TypeError with "raise", else skipped.
    """
    found: set[str] = set()
    for index, secret in enumerate(secrets):
        if secret is None or secret == "":
            continue
        if not isinstance(secret, str):
            if too_short == "raise":
                raise TypeError(f"secrets[{index}]: expected a string, got {type(secret).__name__}")
            continue
        if len(secret.strip()) < MIN_SECRET_LENGTH:
            if too_short == "raise":
                raise ValueError(
                    f"secrets[{index}]: a secret of {len(secret.strip())} characters is too short to redact "
                    f"safely (at least {MIN_SECRET_LENGTH})"
                )
            if too_short == "keep":
                found.add(secret)
            continue
        found.update(secret_variants(secret))
        found.update(secret_variants(secret.strip()))
    return tuple(sorted(found, key=lambda s: (-len(s), s)))


def redact_text(text: str, prepared: tuple[str, ...]) -> str:
    """`text` with every prepared secret (from `prepare_secrets`) replaced by [redacted]."""
    for secret in prepared:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(obj: object, secrets: Iterable[str | None] = ()) -> object:
    """A copy of `obj` with no secret in it.

    In mappings, the value of every secret-looking key (SECRET_KEY_PATTERN) becomes
    "[redacted]" (None, bools and numbers are kept: they are not keys). In every string, keys
    included, each of `secrets` (and its URL-encoded form and, for a URL, its path and long
    path segments) is replaced by "[redacted]". Lists, tuples and sets keep their type; other
    values are returned as they are. A secret shorter than MIN_SECRET_LENGTH raises ValueError.
    """
    return redact_prepared(obj, prepare_secrets(secrets))


def redact_prepared(obj: object, prepared: tuple[str, ...]) -> object:
    """`redact` with secrets already prepared by `prepare_secrets`."""
    if isinstance(obj, str):
        return redact_text(obj, prepared)
    if isinstance(obj, Mapping):
        result = {}
        for key, value in obj.items():
            clean_key = redact_text(key, prepared) if isinstance(key, str) else key
            if is_secret_key(key) and not isinstance(value, _KEPT_UNDER_SECRET_KEY):
                result[clean_key] = REDACTED
            else:
                result[clean_key] = redact_prepared(value, prepared)
        return result
    if isinstance(obj, (list, tuple, set, frozenset)):
        return type(obj)(redact_prepared(v, prepared) for v in obj)
    return obj
