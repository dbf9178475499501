"""The `broker` resource: which account the execution step trades on, chosen per mode where the
definitions load (definitions.py), so the execution asset has one definition.

- `PaperBrokerResource` (DRY, the default): the paper account, sizing against the exchange's
  market rules (the replay exchange's offline; a real exchange's, read from its public markets,
  in DRY mode on a real exchange).
- `LiveBrokerResource` (LIVE, only when every live condition holds): the keyed ccxt client; the
  keys come through Dagster's `EnvVar`, so they are never part of the run config, the UI or a log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dagster import ConfigurableResource
from pydantic import Field

from tracer_assets.resources.exchange import ExchangeResource
from tracer_assets.trading.accounts import LiveAccount, PaperAccount
from tracer_assets.trading.risk import MarketRules

log = logging.getLogger(__name__)


class BrokerResource(ConfigurableResource):
    """An account for the execution path (`trading/execution.py`)."""

    def account(self, settings, exchange: ExchangeResource, run_id: str, config_hash: str, warn: Callable[[str], None]):
        raise NotImplementedError


class PaperBrokerResource(BrokerResource):
    """The paper account (DRY mode)."""

    def account(self, settings, exchange: ExchangeResource, run_id: str, config_hash: str, warn: Callable[[str], None]):
        return PaperAccount(settings, exchange.now, _market_rules(exchange, warn), run_id)


class LiveBrokerResource(BrokerResource):
    """The live exchange account: defined only when every live flag is on and both keys are set."""

    exchange: str = Field(description="a ccxt exchange id")
    api_urls: dict[str, str] = Field(default_factory=dict, description="merged into ccxt's urls['api']")
    sandbox: bool = Field(default=False, description="ccxt sandbox (testnet) mode: TRACER_SANDBOX")
    api_key: str = Field(description="TRACER_EXCHANGE_API_KEY, through EnvVar")
    secret: str = Field(description="TRACER_EXCHANGE_SECRET, through EnvVar")
    timeout_ms: int = Field(default=10_000, description="ccxt request timeout")

    def client(self):
        """A fresh keyed client per call: a run builds one, and nothing keyed outlives it."""
        from tracer_assets.resources.ccxt_exchange import make_ccxt_exchange

        client = make_ccxt_exchange(self.exchange, api_urls=self.api_urls or None, sandbox=self.sandbox)
        client.apiKey, client.secret = self.api_key, self.secret
        client.timeout = self.timeout_ms
        return client

    def account(self, settings, exchange: ExchangeResource, run_id: str, config_hash: str, warn: Callable[[str], None]):
        return LiveAccount(settings, self.client(), config_hash, run_id, warn)


def _market_rules(exchange: ExchangeResource, warn: Callable[[str], None]) -> Callable[[str], MarketRules | None]:
    """The market rules a paper order is sized against: None on replay (the paper account's
    Binance-like defaults); a real exchange's own (step, tick, minimums), read once from its
    public markets, in DRY mode on that exchange. If they cannot be read, the defaults, said."""
    if exchange.is_replay:
        return lambda symbol: None
    loaded: dict[str, MarketRules | None] = {}

    def rules(symbol: str) -> MarketRules | None:
        if symbol not in loaded:
            client = exchange.client()
            try:
                client.load_markets()
                loaded[symbol] = MarketRules.from_ccxt_market(client.market(symbol), client.precisionMode)
            except Exception as error:  # any failure here only loses exactness of paper sizing: said, not fatal
                warn(f"{exchange.exchange} market rules of {symbol} unreadable ({error}); paper sizing uses defaults")
                loaded[symbol] = None
        return loaded[symbol]

    return rules
