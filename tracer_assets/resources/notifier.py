"""Discord / Telegram notifications as a Dagster resource (the sending is in tracer_assets/notify.py).

The webhook URL and the bot token are secrets: pass them as `EnvVar(...)`, never literals, so
Dagster shows only the variable's name in the UI and run config. `from_env()` does that, but
only for the variables that are set: in Dagster 1.13 an `EnvVar` whose variable is unset does
not resolve to None, it fails the whole run at config time (DagsterInvalidConfigError: "You
have attempted to fetch the environment variable ... which is not set"). An unconfigured
notifier must never stop trading, so an unset (or empty) variable leaves the field None, and
the notifier then simply sends nothing. The check is made where the definitions load; runs
launched from that code location inherit the same environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from dagster import ConfigurableResource, EnvVar
from pydantic import Field

from tracer_assets.notify import DEFAULT_TIMEOUT_SECONDS, TELEGRAM_API_BASE, Notifier

DISCORD_WEBHOOK_URL_VARIABLE = "DISCORD_WEBHOOK_URL"
TELEGRAM_BOT_TOKEN_VARIABLE = "TELEGRAM_BOT_TOKEN"
TELEGRAM_CHAT_ID_VARIABLE = "TELEGRAM_CHAT_ID"


class NotifierResource(ConfigurableResource):
    """Builds a `Notifier`; with nothing configured it sends nothing (and never fails)."""

    discord_webhook_url: str | None = Field(
        default=None,
        repr=False,
        description=f"Discord webhook URL; pass EnvVar({DISCORD_WEBHOOK_URL_VARIABLE!r}), never a literal",
    )
    telegram_bot_token: str | None = Field(
        default=None,
        repr=False,
        description=f"Telegram bot token; pass EnvVar({TELEGRAM_BOT_TOKEN_VARIABLE!r}), never a literal",
    )
    telegram_chat_id: str | None = Field(default=None, description="Telegram chat id (or @channel name)")
    telegram_api_base: str = Field(
        default=TELEGRAM_API_BASE, description="Telegram Bot API origin (a local server in tests)"
    )
    timeout_seconds: float = Field(
        default=DEFAULT_TIMEOUT_SECONDS, gt=0, description="per request; a timeout is a failed delivery"
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **config) -> NotifierResource:
        """The resource reading DISCORD_WEBHOOK_URL, TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID
        through `EnvVar` (resolved at run time, masked in the UI), each only when it is set
        and non-empty in `environ` (default: os.environ); `config` sets the other fields."""
        env = os.environ if environ is None else environ
        fields = {
            "discord_webhook_url": DISCORD_WEBHOOK_URL_VARIABLE,
            "telegram_bot_token": TELEGRAM_BOT_TOKEN_VARIABLE,
            "telegram_chat_id": TELEGRAM_CHAT_ID_VARIABLE,
        }
        for field_name, variable in fields.items():
            if field_name not in config and (env.get(variable) or "").strip():
                config[field_name] = EnvVar(variable)
        return cls(**config)

    def secrets(self) -> tuple[str, ...]:
        """The configured secret values, for `AuditLog(secrets=...)` (none when unset)."""
        return tuple(v.strip() for v in (self.discord_webhook_url, self.telegram_bot_token) if v and v.strip())

    def notifier(self, secrets: Iterable[str | None] = ()) -> Notifier:
        """A `Notifier` for this configuration; `secrets` (e.g. exchange or Anthropic keys) are
        also cut from every message and error text. Blank values count as not configured."""
        return Notifier(
            discord_url=(self.discord_webhook_url or "").strip() or None,
            telegram_token=(self.telegram_bot_token or "").strip() or None,
            telegram_chat_id=(self.telegram_chat_id or "").strip() or None,
            timeout=self.timeout_seconds,
            api_base=self.telegram_api_base,
            secrets=secrets,
        )
