"""Which secrets a configuration uses, checked when the definitions load.

A secret is required, and checked, only where it is used: the Anthropic key with the `llm`
decider, the exchange keys when every live flag is on, a webhook URL or bot token when it is
set. A malformed one in use (blank, padded with spaces, too short to redact safely) stops the
code location from loading with an error naming the variable, never its value, instead of
failing runs after their decisions were committed. A secret that is set but unused is never
required: it is redacted from the audit files when it is long enough to redact, else ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tracer_assets.redaction import MIN_SECRET_LENGTH
from tracer_assets.resources.notifier import DISCORD_WEBHOOK_URL_VARIABLE, TELEGRAM_BOT_TOKEN_VARIABLE
from tracer_assets.settings import Settings, SettingsError

ANTHROPIC_KEY_VAR = "ANTHROPIC_API_KEY"
# The exchange keys of live trading, read through Dagster's EnvVar (definitions.broker_resource).
API_KEY_VAR, SECRET_VAR = "TRACER_EXCHANGE_API_KEY", "TRACER_EXCHANGE_SECRET"
SECRET_VARIABLES = (
    ANTHROPIC_KEY_VAR,
    API_KEY_VAR,
    SECRET_VAR,
    DISCORD_WEBHOOK_URL_VARIABLE,
    TELEGRAM_BOT_TOKEN_VARIABLE,
)


def secrets_in_use(settings: Settings, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The names of the secret variables this configuration uses."""
    used = []
    if settings.trading.decider == "llm":
        used.append(ANTHROPIC_KEY_VAR)
    if settings.trading.live_flags_on and not settings.market.is_replay:
        used += [API_KEY_VAR, SECRET_VAR]
    used += [
        name for name in (DISCORD_WEBHOOK_URL_VARIABLE, TELEGRAM_BOT_TOKEN_VARIABLE) if environ.get(name, "").strip()
    ]
    return tuple(used)


def check_secrets(settings: Settings, environ: Mapping[str, str]) -> None:
    """SettingsError naming the first secret in use that is set but malformed. An unset (or
    empty) one is not an error here: without exchange keys the run trades on paper and says
    why; without an Anthropic key Dagster refuses the llm decider's runs, naming the variable
    its EnvVar could not read."""
    for name in secrets_in_use(settings, environ):
        problem = _malformed(environ.get(name))
        if problem:
            raise SettingsError(f"{name}: {problem}")


def secrets_to_redact(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """The secret values to cut from audit records and notifications: those in use (checked at
    load time), and unused ones that are long enough to be redacted safely."""
    environ = os.environ if environ is None else environ
    used = set(secrets_in_use(settings, environ))
    values = []
    for name in SECRET_VARIABLES:
        value = environ.get(name)
        if not value or (name not in used and _malformed(value)):
            continue
        values.append(value)
    return values


def _malformed(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not value.strip():
        return "set but blank (only whitespace)"
    if value != value.strip():
        return "has leading or trailing whitespace (a copy-paste slip?)"
    if len(value) < MIN_SECRET_LENGTH:
        return (
            f"only {len(value)} characters: too short to be a real secret "
            f"or to be redacted safely (at least {MIN_SECRET_LENGTH})"
        )
    return None
