"""The exchange resource: the replay exchange (default, offline) or a real ccxt client.

Both answer ccxt's market-data calls, so the assets never ask which one they have.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from tracer_assets.market.download import RetryPolicy, call_with_retries
from tracer_assets.settings import Settings


class ExchangeResource(ConfigurableResource):
    """Where candles come from. Public market data only: no keys are read here."""

    exchange: str = Field(default="replay", description="`replay` or a ccxt exchange id")
    api_urls: dict[str, str] = Field(default_factory=dict, description="merged into ccxt's urls['api']")
    symbols: list[str] = Field(description="ccxt symbols, e.g. BTC/USDT")
    base_timeframe: str = Field(default="5m")
    replay_dir: str = Field(description="folder of candle files (freqtrade layout) for `replay`")
    replay_start: str | None = Field(default=None, description="ISO time; starts the replay clock")
    replay_speed: float = Field(default=1.0)
    replay_anchor: str | None = Field(default=None, description="ISO time at which the clock shows replay_start")
    page_limit: int = Field(default=1000)
    retries: int = Field(default=5)
    backoff_seconds: float = Field(default=1.0)

    _client = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> ExchangeResource:
        return cls(
            exchange=settings.market.exchange,
            api_urls=dict(settings.market.exchange_urls),
            symbols=list(settings.market.symbols),
            base_timeframe=settings.market.base_timeframe,
            replay_dir=str(settings.market.replay_dir),
            replay_start=settings.market.replay_start.isoformat() if settings.market.replay_start else None,
            replay_speed=settings.market.replay_speed,
            replay_anchor=settings.market.replay_anchor.isoformat() if settings.market.replay_anchor else None,
            page_limit=settings.market.fetch_page_limit,
            retries=settings.market.fetch_retries,
            backoff_seconds=settings.market.fetch_backoff_seconds,
        )

    @property
    def is_replay(self) -> bool:
        return self.exchange == "replay"

    def client(self):
        """The ccxt-shaped client, built once per resource instance."""
        if self._client is None:
            self._client = build_exchange_client(self)
        return self._client

    def now(self, ask_exchange: bool = False) -> datetime:
        """The exchange's clock: the replay clock on replay; on a real exchange its time endpoint
        when `ask_exchange` (LIVE mode, where requests are expected), else ccxt's local clock, so
        that paper trading on a real exchange's data makes no request of its own."""
        client = self.client()
        if ask_exchange and not self.is_replay and client.has.get("fetchTime"):
            what = f"{self.exchange} fetch_time"
            return datetime.fromtimestamp(
                call_with_retries(client.fetch_time, policy=self.retry_policy(), what=what) / 1000, tz=UTC
            )
        return datetime.fromtimestamp(client.milliseconds() / 1000, tz=UTC)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.retries, backoff_seconds=self.backoff_seconds)


def build_exchange_client(config: ExchangeResource):
    if config.exchange == "replay":
        from tracer_assets.resources.replay_exchange import ReplayExchange

        return ReplayExchange(
            config.replay_dir,
            symbols=config.symbols,
            base_timeframe=config.base_timeframe,
            clock_start=datetime.fromisoformat(config.replay_start) if config.replay_start else None,
            clock_speed=config.replay_speed,
            clock_anchor=datetime.fromisoformat(config.replay_anchor) if config.replay_anchor else None,
        )
    from tracer_assets.resources.ccxt_exchange import make_ccxt_exchange

    return make_ccxt_exchange(config.exchange, api_urls=config.api_urls or None)
