"""Discord and Telegram notifications that can never break trading.

`Notifier.notify` sends a `Notification` to every configured channel and returns one
`DeliveryResult` per channel. It never raises: an HTTP error, a timeout, a refused connection,
a malformed configuration or a bug here all come back as `ok=False` with an error text from
which the webhook URL, the bot token and any other registered secret have been cut, and are
logged at WARNING. With no channel configured it sends nothing and returns [].

Plain `urllib.request` (no dependency). One attempt per message, no retries: a tick must not
stall behind a chat service, and the next tick notifies again. Redirects are not followed (a
webhook that redirects is misconfigured, and following it would drop the POST body).

Limits: Discord's message content is at most 2000 characters, Telegram's text 4096; both are
counted here in UTF-16 code units (the stricter count), and a longer message is cut with "…".
Messages are redacted before they are cut, so a cut can never leave half a secret behind.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

from tracer_assets.money import decimal_text
from tracer_assets.redaction import MIN_SECRET_LENGTH, prepare_secrets, redact_text

log = logging.getLogger(__name__)

LEVELS: tuple[str, ...] = ("info", "warning", "error")
DISCORD_LIMIT = 2000
TELEGRAM_LIMIT = 4096
TELEGRAM_API_BASE = "https://api.telegram.org"
DEFAULT_TIMEOUT_SECONDS = 5.0
# Discord's Cloudflare front refuses urllib's default "Python-urllib/x.y" agent (error 1010).
USER_AGENT = "Tracer-notifier/1.0"
ERROR_BODY_CHARS = 300  # of a failing reply's body kept in the error text (Telegram's description)


@dataclass(frozen=True)
class Notification:
    """A message: `title` on the first line, `text` below it, `level` one of LEVELS."""

    title: str
    text: str = ""
    level: str = "info"

    def __post_init__(self) -> None:
        if not isinstance(self.title, str) or not isinstance(self.text, str):
            raise TypeError("Notification title and text must be strings")
        if not self.title.strip() and not self.text.strip():
            raise ValueError("Notification: title and text are both empty (chat services refuse empty messages)")
        if self.level not in LEVELS:
            raise ValueError(f"Notification level={self.level!r}, expected one of {', '.join(LEVELS)}")

    def render(self) -> str:
        head = f"[{self.level.upper()}] {self.title.strip()}".rstrip()
        return f"{head}\n{self.text.strip()}" if self.text.strip() else head


@dataclass(frozen=True)
class DeliveryResult:
    """One channel's outcome; `error` is redacted of every secret the notifier knows."""

    channel: str
    ok: bool
    error: str | None = None


class DeliveryError(RuntimeError):
    """A message did not arrive; the text is already redacted."""


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-16 code units, ending in "…" when it was cut."""
    if _utf16_len(text) <= limit:
        return text
    kept, used = [], 0
    for char in text:
        size = _utf16_len(char)
        if used + size > limit - 1:  # one unit left for the ellipsis
            break
        kept.append(char)
        used += size
    return "".join(kept) + "…"


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _as_text(message: Notification | str) -> str:
    if isinstance(message, Notification):
        return message.render()
    if isinstance(message, str) and message.strip():
        return message
    raise ValueError("message: expected a Notification or a non-empty string")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102 - urllib hook
        return None  # a 3xx then surfaces as an HTTPError with its status


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post_json(url: str, payload: Mapping, timeout: float, channel: str, secrets: tuple[str, ...]) -> bytes:
    """POST `payload` as JSON; the reply body on a 2xx, else DeliveryError (redacted)."""
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise DeliveryError(f"{channel}: timeout={timeout!r}, expected seconds > 0")
    request = urllib.request.Request(
        url,
        data=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT},
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        body = _read_body(error)
        problem = f"HTTP {error.code}" + (f": {body}" if body else "")
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            problem = f"timed out after {timeout:g} s"
        else:
            problem = f"connection failed: {reason}"
    except TimeoutError:
        problem = f"timed out after {timeout:g} s"
    except (http.client.HTTPException, OSError, ValueError) as error:
        problem = f"{type(error).__name__}: {error}"
    # `from None`: the urllib exception holds the URL (and so the token); it must not travel.
    raise DeliveryError(redact_text(f"{channel}: {problem}", secrets)) from None


def _read_body(error: urllib.error.HTTPError) -> str:
    try:
        raw = error.read(ERROR_BODY_CHARS * 4)
    except Exception:  # noqa: BLE001 - the status alone is enough
        return ""
    text = raw.decode("utf-8", "replace").strip()
    try:  # Telegram and Discord explain themselves in JSON
        data = json.loads(text)
        if isinstance(data, dict):
            text = str(data.get("description") or data.get("message") or text)
    except ValueError:
        pass
    return " ".join(text.split())[:ERROR_BODY_CHARS]


def _check_http_url(url: object, what: str) -> str:
    # The message names the setting, never the value: the value is the secret.
    if not isinstance(url, str):
        raise DeliveryError(f"{what} is not configured as a string")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DeliveryError(f"{what} is not an http(s) URL")
    return url.strip()


def _with_secret(value: str, what: str, secrets: Iterable[str | None]) -> tuple[str, ...]:
    """The channel's own secret plus `secrets`, prepared for redaction; a channel value too
    short to be real is reported by its setting's name, never by its value."""
    if len(value) < MIN_SECRET_LENGTH:
        raise DeliveryError(f"{what} is too short to be real ({len(value)} characters)")
    return prepare_secrets([value, *secrets])


def send_discord(
    url: str, message: Notification | str, timeout: float = DEFAULT_TIMEOUT_SECONDS, secrets: Iterable[str | None] = ()
) -> None:
    """POST `{"content": message}` to a Discord webhook URL (mentions disabled, 2000 characters
    at most). Raises DeliveryError, redacted of the URL and `secrets`, when it does not arrive."""
    url = _check_http_url(url, "discord: the webhook URL")
    prepared = _with_secret(url, "discord: the webhook URL", secrets)
    content = truncate(redact_text(_as_text(message), prepared), DISCORD_LIMIT)
    # allowed_mentions: a reason quoting "@everyone" must not ping the whole server.
    _post_json(url, {"content": content, "allowed_mentions": {"parse": []}}, timeout, "discord", prepared)


def send_telegram(
    bot_token: str,
    chat_id: str | int,
    message: Notification | str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    api_base: str = TELEGRAM_API_BASE,
    secrets: Iterable[str | None] = (),
) -> None:
    """POST `{"chat_id", "text"}` to `<api_base>/bot<token>/sendMessage` (4096 characters at
    most; plain text, no parse mode, so no character of a reason can break Markdown parsing).
    Raises DeliveryError, redacted of the token and `secrets`, unless Telegram answers ok."""
    if not isinstance(bot_token, str) or not bot_token.strip():
        raise DeliveryError("telegram: the bot token is not configured")
    token = bot_token.strip()
    if any(c in token for c in "/?#") or any(c.isspace() for c in token):
        raise DeliveryError("telegram: the bot token is malformed (expected <bot id>:<secret>)")
    prepared = _with_secret(token, "telegram: the bot token", secrets)
    if chat_id is None or isinstance(chat_id, bool) or not str(chat_id).strip():
        raise DeliveryError("telegram: the chat id is not configured")
    base = _check_http_url(api_base, "telegram: the Bot API base URL").rstrip("/")
    text = truncate(redact_text(_as_text(message), prepared), TELEGRAM_LIMIT)
    body = _post_json(
        f"{base}/bot{token}/sendMessage", {"chat_id": str(chat_id).strip(), "text": text}, timeout, "telegram", prepared
    )
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        answer = None
    if not isinstance(answer, dict) or answer.get("ok") is not True:
        detail = answer.get("description") if isinstance(answer, dict) else "the reply is not Bot API JSON"
        raise DeliveryError(redact_text(f"telegram: not delivered: {str(detail)[:ERROR_BODY_CHARS]}", prepared))


class Notifier:
    """Sends to every configured channel. Discord needs `discord_url`; Telegram needs both
    `telegram_token` and `telegram_chat_id`. None or "" means "not configured". `secrets` are
    further values (exchange or Anthropic keys) cut from every message and error text."""

    def __init__(
        self,
        discord_url: str | None = None,
        telegram_token: str | None = None,
        telegram_chat_id: str | int | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        api_base: str = TELEGRAM_API_BASE,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self._discord_url = discord_url or None
        self._telegram_token = telegram_token or None
        self._telegram_chat_id = None if telegram_chat_id in (None, "") else telegram_chat_id
        self.timeout = timeout
        self.api_base = api_base
        self._extra = prepare_secrets(secrets)  # a too-short extra secret is the caller's bug: raise
        # A junk-short URL/token still must not break trading: it is redacted as it is ("keep"),
        # and the send fails with a message naming the setting.
        channel_secrets = [s for s in (self._discord_url, self._telegram_token) if isinstance(s, str)]
        self._secrets = prepare_secrets(channel_secrets, too_short="keep") + self._extra

    def __repr__(self) -> str:  # the URL and the token stay out of any repr
        return f"Notifier(channels={list(self.channels)!r}, timeout={self.timeout!r})"

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels a notification goes to: "discord" and/or "telegram" (a half-configured
        Telegram counts, so its missing setting is reported instead of silently ignored)."""
        found = []
        if self._discord_url:
            found.append("discord")
        if self._telegram_token or self._telegram_chat_id is not None:
            found.append("telegram")
        return tuple(found)

    def notify(self, notification: Notification | str) -> list[DeliveryResult]:
        """Deliver to every configured channel; never raises. [] when none is configured."""
        results = []
        for channel in self.channels:
            try:
                if self._telegram_token is None and channel == "telegram":
                    raise DeliveryError("telegram: TELEGRAM_BOT_TOKEN is not set (TELEGRAM_CHAT_ID is)")
                if self._telegram_chat_id is None and channel == "telegram":
                    raise DeliveryError("telegram: TELEGRAM_CHAT_ID is not set (TELEGRAM_BOT_TOKEN is)")
                if channel == "discord":
                    send_discord(self._discord_url, notification, self.timeout, secrets=self._extra)
                else:
                    send_telegram(
                        self._telegram_token,
                        self._telegram_chat_id,
                        notification,
                        self.timeout,
                        self.api_base,
                        secrets=self._extra,
                    )
                results.append(DeliveryResult(channel, True, None))
            except Exception as error:  # noqa: BLE001 - a notification never breaks trading
                text = str(error) if isinstance(error, DeliveryError) else f"{channel}: {type(error).__name__}: {error}"
                text = redact_text(text, self._secrets)
                log.warning("notification not delivered: %s", text)
                results.append(DeliveryResult(channel, False, text))
        return results


# --- messages ----------------------------------------------------------------------------------


def _show(value: object) -> str:
    if isinstance(value, Decimal):
        return decimal_text(value)
    return "" if value is None else str(value)


def format_order_message(order: Mapping) -> Notification:
    """ "DRY BUY BTC/USDT: filled" with amount, price, reason and client order id below; a
    rejected or canceled order is a warning."""
    status = _show(order.get("status")) or "sent"
    title = (
        f"{_show(order.get('mode')) or '?'} {_show(order.get('side')).upper() or '?'} "
        f"{_show(order.get('symbol')) or '?'}: {status}"
    )
    lines = []
    amount, price = _show(order.get("amount")), _show(order.get("price"))
    if amount:
        lines.append(f"amount {amount}" + (f" at {price}" if price else ""))
    if order.get("reason"):
        lines.append(f"reason: {_show(order.get('reason'))}")
    if order.get("client_order_id"):
        lines.append(f"client order id: {_show(order.get('client_order_id'))}")
    level = "warning" if status in ("rejected", "canceled", "failed", "error") else "info"
    return Notification(title=title, text="\n".join(lines), level=level)


def format_decision_message(decision: Mapping) -> Notification:
    """ "DRY decision: BUY BTC/USDT" with confidence and reason below."""
    action = _show(decision.get("action")).upper() or "?"
    symbol = _show(decision.get("symbol"))
    title = f"{_show(decision.get('mode')) or '?'} decision: {action}" + (f" {symbol}" if symbol else "")
    lines = []
    if decision.get("confidence") is not None:
        lines.append(f"confidence {_show(decision.get('confidence'))}")
    if decision.get("reason"):
        lines.append(f"reason: {_show(decision.get('reason'))}")
    return Notification(title=title, text="\n".join(lines), level="info")
