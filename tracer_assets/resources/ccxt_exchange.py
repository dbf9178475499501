"""The real ccxt client, and the market context (open interest, funding) next to the candles.

`make_ccxt_exchange` builds a ccxt exchange for public market data, optionally pointed at
other API URLs (a local server, a proxy, a mirror): that is what TRACER_EXCHANGE_URLS feeds.
`fetch_market_context` asks any ccxt-shaped exchange (a real one or the replay exchange) for
what a perpetual has beyond candles, and says why when there is nothing to say.

No Dagster here. No credentials either: everything here is public market data.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from urllib.parse import urlsplit

import ccxt

from tracer_assets.market.download import RetryPolicy, call_with_retries

# The api_urls key that rebases every API URL of the client onto one origin.
REBASE_ALL = "*"
# Named in the error for an unknown id, next to the closest spellings.
_WELL_KNOWN_IDS = ("binance", "bybit", "okx", "kraken", "coinbase")


def make_ccxt_exchange(exchange_id: str, api_urls: Mapping[str, object] | None = None, sandbox: bool = False):
    """A ccxt client for `exchange_id` with its rate limiter on, for public market data.

    `api_urls` is merged into the client's `urls['api']` (after sandbox mode, so it wins):
      - a known key replaces that URL, e.g. {"public": "http://localhost:8080/api/v3"} for
        binance; a nested mapping merges into a nested entry (gate, mexc, whitebit);
      - the key "*" rebases every API URL onto one origin and keeps each URL's own path:
        {"*": "http://localhost:8080"} turns https://fapi.binance.com/fapi/v1 into
        http://localhost:8080/fapi/v1 (a path on the origin becomes a prefix). Explicit keys
        are applied after it;
      - where `urls['api']` is a single string (no exchange of ccxt 4.5.90, but ccxt allows
        it), it is treated as {"rest": <that string>}: "*" or "rest" replace it.
    An unknown key raises ValueError rather than leave that endpoint on the real exchange.
    Mind that binance's load_markets reads /api/v3, /fapi/v1 and /dapi/v1 exchangeInfo:
    overriding "public" alone still sends two requests to the real fapi/dapi hosts, so
    point a local server at binance with "*". ("*" gives fapiData and dapiData the same
    /futures/data URL; nothing here uses them.)
    """
    if exchange_id not in ccxt.exchanges:
        close = difflib.get_close_matches(exchange_id.lower(), ccxt.exchanges, n=3)
        suggestions = list(dict.fromkeys([*close, *_WELL_KNOWN_IDS]))
        raise ValueError(
            f"unknown ccxt exchange id {exchange_id!r}; try one of {', '.join(suggestions)} "
            f"(ccxt {ccxt.__version__} knows {len(ccxt.exchanges)} ids, listed in ccxt.exchanges)"
        )
    client = getattr(ccxt, exchange_id)({"enableRateLimit": True})
    if sandbox:
        # Every ccxt 4.5.90 exchange has urls['test'], but many hold None there, on which
        # set_sandbox_mode fails with a TypeError rather than ccxt's NotSupported.
        if not client.urls.get("test"):
            raise ValueError(f"ccxt exchange {exchange_id!r} has no sandbox; run without sandbox mode")
        client.set_sandbox_mode(True)
    if api_urls:
        overrides = dict(api_urls)
        api = client.urls["api"]
        as_dict = {"rest": api} if isinstance(api, str) else api
        if REBASE_ALL in overrides:
            as_dict = _rebase(as_dict, _check_url(overrides.pop(REBASE_ALL), REBASE_ALL))
        as_dict = _merge(as_dict, overrides, exchange_id)
        client.urls["api"] = as_dict["rest"] if isinstance(api, str) else as_dict
    return client


def _check_url(url: object, key: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise ValueError(f"api_urls[{key!r}] must be an http(s) URL, got {url!r}")
    return url.rstrip("/")


def _rebase(api: dict, origin: str) -> dict:
    rebased = {}
    for key, url in api.items():
        if isinstance(url, dict):
            rebased[key] = _rebase(url, origin)
        else:
            parts = urlsplit(url)
            rebased[key] = origin + parts.path + (f"?{parts.query}" if parts.query else "")
    return rebased


def _merge(api: dict, overrides: Mapping[str, object], where: str) -> dict:
    merged = dict(api)
    for key, value in overrides.items():
        if key not in api:
            raise ValueError(
                f"{where} has no API URL named {key!r}; its API URLs are: {', '.join(api)} (or '*' for all)"
            )
        if isinstance(api[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}.{key} is a group of URLs ({', '.join(api[key])}): give a mapping")
            merged[key] = _merge(api[key], value, f"{where}.{key}")
        else:
            merged[key] = _check_url(value, key)
    return merged


def fetch_market_context(exchange, symbol: str, policy: RetryPolicy = RetryPolicy()) -> dict:
    """Open interest and the current funding rate of `symbol`, where the exchange has them.

    Returns {"open_interest": float|None, "funding_rate": float|None,
    "funding_timestamp": int|None, "errors": {field: why it is None}}. `open_interest` is
    ccxt's openInterestAmount (contracts or base currency, as the exchange counts);
    `funding_timestamp` is ccxt's fundingTimestamp, the ms of the funding the rate applies to.
    A spot market, or an exchange without these calls, gives None and a reason, never an
    exception; network trouble is retried by `policy` and raises once retries run out.
    """
    context = {"open_interest": None, "funding_rate": None, "funding_timestamp": None, "errors": {}}
    errors = context["errors"]
    exchange_id = getattr(exchange, "id", type(exchange).__name__)
    markets = call_with_retries(exchange.load_markets, policy=policy, what=f"load_markets {exchange_id}")
    market = markets.get(symbol)
    for field, method in (("open_interest", "fetchOpenInterest"), ("funding_rate", "fetchFundingRate")):
        if market is None:
            errors[field] = f"{exchange_id} has no market {symbol}"
        elif not exchange.has.get(method):
            errors[field] = f"{exchange_id} does not support {method}"
        elif not _is_contract(market):
            # Asked anyway, Binance would answer with the perpetual of the same id.
            errors[field] = (
                f"{symbol} is a {market.get('type', 'spot')} market on {exchange_id}: no {field.replace('_', ' ')}"
            )
    if "open_interest" not in errors:
        interest = _ask(exchange.fetch_open_interest, symbol, policy, "open_interest", errors)
        if interest is not None:
            context["open_interest"] = _float_or_none(interest.get("openInterestAmount"))
            if context["open_interest"] is None:
                errors["open_interest"] = f"{exchange_id} answered without an open interest amount for {symbol}"
    if "funding_rate" not in errors:
        funding = _ask(exchange.fetch_funding_rate, symbol, policy, "funding_rate", errors)
        if funding is not None:
            context["funding_rate"] = _float_or_none(funding.get("fundingRate"))
            stamp = funding.get("fundingTimestamp")
            context["funding_timestamp"] = None if stamp is None else int(stamp)
            if context["funding_rate"] is None:
                errors["funding_rate"] = f"{exchange_id} answered without a funding rate for {symbol}"
    return context


def spot_market_context(exchange, spot_symbol: str, policy: RetryPolicy = RetryPolicy()) -> dict:
    """`fetch_market_context` for a spot symbol, read off its linear perpetual (BTC/USDT ->
    BTC/USDT:USDT) where the exchange lists one: a spot market has no open interest or funding
    of its own. Never raises: a failure (the exchange down past the retries) becomes the reason
    in `errors`, because a decision can be made without these two figures."""
    perpetual = f"{spot_symbol}:{spot_symbol.split('/')[-1]}"
    try:
        markets = call_with_retries(exchange.load_markets, policy=policy, what=f"load_markets {exchange.id}")
        return fetch_market_context(exchange, perpetual if perpetual in markets else spot_symbol, policy)
    except ccxt.BaseError as exc:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        return {"open_interest": None, "funding_rate": None, "funding_timestamp": None,
                "errors": {"open_interest": reason, "funding_rate": reason}}  # fmt: skip


def _is_contract(market: Mapping) -> bool:
    # ccxt markets say `contract`; the replay exchange's markets only give a `type`.
    return bool(market.get("contract")) or market.get("type") in ("swap", "future", "option")


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)


def _ask(call, symbol: str, policy: RetryPolicy, field: str, errors: dict) -> dict | None:
    try:
        return call_with_retries(call, symbol, policy=policy, what=f"{call.__name__} {symbol}")
    except (ccxt.NotSupported, ccxt.BadSymbol) as exc:
        errors[field] = f"{type(exc).__name__}: {exc}"
        return None
