"""How a setting is read from the environment: the parsers every domain's settings use, and the
error that names the variable at fault. Blank means the default; NaN and infinity are refused."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import InvalidOperation
from pathlib import Path

# One row of a settings table: (name, default as written in the README, meaning).
Row = tuple[str, str, str]


class SettingsError(ValueError):
    """A setting has a value Tracer cannot use; the message names the variable."""


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: expected 1/0, true/false, yes/no or on/off")


def text(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    raw = env.get(name)
    return default if raw is None or raw.strip() == "" else raw.strip()


def number(env: Mapping[str, str], name: str, default: str, kind: type):
    """A finite number of `kind` (int, float or Decimal); NaN and infinity are refused."""
    raw = text(env, name, default)
    try:
        value = kind(raw)
    except (ValueError, InvalidOperation):
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r}: expected a finite number")
    return value


def positive(name: str, value):
    if value <= 0:
        raise SettingsError(f"{name}={value}: must be greater than 0")
    return value


def not_negative(name: str, value):
    if value < 0:
        raise SettingsError(f"{name}={value}: must be 0 or more")
    return value


def fraction(env: Mapping[str, str], name: str, default: str, kind: type):
    value = number(env, name, default, kind)
    if not 0 <= value <= 1:
        raise SettingsError(f"{name}={value}: must lie in [0, 1]")
    return value


def choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = text(env, name, default).lower()
    if value not in choices:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def path(env: Mapping[str, str], name: str, default: str) -> Path:
    return Path(text(env, name, default)).expanduser().absolute()


def instant(env: Mapping[str, str], name: str) -> datetime | None:
    raw = text(env, name, None)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected an ISO date or time, e.g. 2024-06-01T00:00") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def day(env: Mapping[str, str], name: str) -> str | None:
    raw = text(env, name, None)
    if raw is None:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a date as YYYY-MM-DD") from None


def defaults(table: tuple[Row, ...]) -> dict[str, str]:
    """The plain defaults of a table (numbers, flags, words): the one place each is written. A
    default in parentheses, or a derived one, is described in the table and computed by the loader."""
    return {name: default for name, default, _ in table if not default.startswith("(")}
