"""A local stand-in for Binance's public REST API, so tests can drive ccxt's real `binance` client.

It answers what ccxt 4.5.90 sends for `load_markets`, `fetch_ohlcv`, `fetch_time`,
`fetch_open_interest` and `fetch_funding_rate`, serves real candles from the bundled files,
records every request, and fails on demand:

    with FakeBinance() as server:
        exchange = make_ccxt_exchange("binance", api_urls={"*": server.url})
        server.fail_next("/api/v3/klines", status=429)
        server.fail_always("ETHUSDT", status=503)
        ...
        server.requests("/api/v3/klines", symbol="BTC/USDT")

The server's clock stands still at `now_ms` (by default the end of the bundled BTC candles,
2024-09-06 04:45 UTC): klines opening after it do not exist yet.

Signed spot endpoints (what ccxt sends for `create_order`, `fetch_order`, `fetch_orders`,
`fetch_open_orders`, `cancel_order`, `fetch_balance`, `fetch_my_trades`) keep one account:

    with FakeBinance(balances={"USDT": "1000"}, api_keys={"key": "secret"}) as server:
        exchange.apiKey, exchange.secret = "key", "secret"
        server.crash_after_accepting("/api/v3/order")   # store the next order, drop the reply
        ...
        server.orders()                                   # every order the account holds

They require the `X-MBX-APIKEY` header, `timestamp` and `signature` (and check the HMAC when
`api_keys` maps the key to its secret). A MARKET order fills at once at the close of the
symbol's newest 5m candle up to `now_ms`, taker fee 0.1% taken from the asset received (Binance's
default without BNB); a LIMIT order rests. As on Binance, `newClientOrderId` must be unique among
OPEN orders only: reusing the id of a filled order is accepted and makes a second order.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np

import tracer_assets
from tracer_assets.market.timeframes import timeframe_ms
from tracer_assets.resources.replay_exchange import CANDLE_FILE_NAME, read_candle_file

BUNDLED_DATA = Path(tracer_assets.__file__).parent / "data" / "binance_spot_2024"
DATA_END_MS = int(datetime(2024, 9, 6, 4, 45, tzinfo=UTC).timestamp() * 1000)
FUNDING_PERIOD_MS = 8 * 3_600_000

_FORMATS = {".parquet": 0, ".feather": 1, ".json": 2}  # the same preference as the replay exchange

# Binance's spot filters as they stood in 2024: tickSize, stepSize, maxQty.
_SPOT_FILTERS = {
    "BTCUSDT": ("0.01", "0.00001", "9000"),
    "ETHUSDT": ("0.01", "0.0001", "9000"),
    "SOLUSDT": ("0.01", "0.001", "90000"),
    "XRPUSDT": ("0.0001", "0.1", "9222449"),
    "DOGEUSDT": ("0.00001", "1", "9000000"),
    "LINKUSDT": ("0.01", "0.01", "90000"),
    "LTCUSDT": ("0.01", "0.001", "90000"),
    "AVAXUSDT": ("0.01", "0.01", "9000000"),
}
_DEFAULT_SPOT_FILTERS = ("0.00000001", "0.00000001", "9000000000")  # a pair this table does not know

TOO_MANY_REQUESTS = {
    "code": -1003,
    "msg": "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. "
    "Please use WebSocket Streams for live updates to avoid polling the API.",
}


@dataclass(frozen=True)
class Perpetual:
    """A USDT-margined perpetual on /fapi: its filters and the values the server reports."""

    base: str
    tick_size: str
    min_price: str
    max_price: str
    step_size: str
    max_qty: str
    market_max_qty: str
    min_notional: str
    open_interest: str  # in base currency, as Binance writes it
    last_funding_rate: str

    @property
    def id(self) -> str:
        return f"{self.base}USDT"


DEFAULT_PERPETUALS = (
    Perpetual("BTC", "0.10", "556.80", "4529764", "0.001", "1000", "120", "100", "81234.567", "0.00010000"),
    Perpetual("ETH", "0.01", "39.86", "306177", "0.001", "10000", "2000", "20", "1975310.246", "-0.00002315"),
)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    status: int

    @property
    def symbol(self) -> str | None:
        return self.query.get("symbol")


@dataclass
class _Fault:
    match: str  # a path ("/api/v3/klines") or a Binance symbol id ("ETHUSDT")
    status: int
    body: bytes
    content_type: str
    remaining: int | None  # None: forever
    method: str | None = None  # None: any method


@dataclass
class _Crash:
    """Accept (store) the next matching request, then fail to answer it."""

    path: str
    method: str
    mode: str  # "drop": close the connection without a reply; "503": a gateway error page;
    # "hang": answer nothing until the server stops (the caller is killed mid-request)
    remaining: int
    outage_after: int = 0  # then this many requests for the same symbol fail with 503


TAKER_FEE = Decimal("0.001")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


@dataclass
class FakeOrder:
    """One spot order on the fake account, in Binance's terms."""

    order_id: int
    client_order_id: str
    symbol: str  # Binance id, e.g. BTCUSDT
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT
    orig_qty: Decimal
    price: Decimal  # limit price; 0 for market orders, as Binance writes it
    time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    cummulative_quote_qty: Decimal = Decimal(0)
    update_ms: int = 0
    time_in_force: str = "GTC"
    fills: list[dict] = field(default_factory=list)

    def as_binance(self) -> dict:
        """The order as GET /api/v3/order answers."""
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "price": _dec(self.price),
            "origQty": _dec(self.orig_qty),
            "executedQty": _dec(self.executed_qty),
            "cummulativeQuoteQty": _dec(self.cummulative_quote_qty),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": self.time_ms,
            "updateTime": self.update_ms or self.time_ms,
            "isWorking": True,
            "workingTime": self.time_ms,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


class _BinanceError(Exception):
    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.body = status, {"code": code, "msg": msg}


def _dec(value: Decimal) -> str:
    return f"{value:.8f}"  # Binance's 8 decimals, written from a Decimal without float rounding


def _symbol_id(symbol: str) -> str:
    """'ETH/USDT' or 'ETHUSDT' -> 'ETHUSDT' (a settle suffix like ':USDT' is dropped)."""
    return symbol.split(":")[0].replace("/", "").upper()


def _price(value: float) -> str:
    return f"{value:.8f}"  # Binance writes every price and quantity with 8 decimals


class FakeBinance:
    """A threaded HTTP server on 127.0.0.1 speaking Binance's public market-data REST API."""

    def __init__(
        self,
        data_dir: Path = BUNDLED_DATA,
        now_ms: int = DATA_END_MS,
        perpetuals: tuple[Perpetual, ...] = DEFAULT_PERPETUALS,
        balances: Mapping[str, str | Decimal] | None = None,
        api_keys: Mapping[str, str] | None = None,
    ):
        """`balances`: the spot account's free balances (default 10,000 USDT); `api_keys`: key ->
        secret, checked with the HMAC when given (otherwise any key and signature pass)."""
        self.now_ms = now_ms
        self.ticker_prices: dict[str, Decimal] = {}  # symbol id -> a last price other than the candles'
        self._balances: dict[str, Decimal] = {
            asset: Decimal(str(amount)) for asset, amount in (balances or {"USDT": "10000"}).items()
        }
        self._locked: dict[str, Decimal] = {}
        self._api_keys = dict(api_keys) if api_keys is not None else None
        self._orders: list[FakeOrder] = []
        self._next_order_id = 1
        self._next_trade_id = 1
        self._crashes: list[_Crash] = []
        self._stopping = threading.Event()  # releases "hang" crashes
        self.perpetuals = {p.id: p for p in perpetuals}
        self._files: dict[tuple[str, str], Path] = {}
        self._assets: dict[str, tuple[str, str]] = {}  # symbol id -> (base, quote)
        for path in sorted(Path(data_dir).iterdir(), key=lambda p: _FORMATS.get(p.suffix, 9)):
            match = CANDLE_FILE_NAME.match(path.name)
            if match and match["settle"] is None and match["kind"] is None:  # spot files only (BTC_USDT-5m)
                symbol_id = match["base"] + match["quote"]
                self._files.setdefault((symbol_id, match["tf"]), path)
                self._assets[symbol_id] = (match["base"], match["quote"])
        self._series: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._requests: list[Request] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeBinance:
        # A short poll keeps shutdown() quick; the default of 0.5 s would slow every test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-binance", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- what tests control and inspect ------------------------------------------------

    def fail_next(
        self, match: str, status: int = 429, times: int = 1, body: object = None, method: str | None = None
    ) -> None:
        """The next `times` requests to a path ('/api/v3/klines') or for a symbol ('ETH/USDT') fail
        (only those of `method`, e.g. "GET", when given)."""
        self._add_fault(match, status, times, body, method)

    def fail_always(self, match: str, status: int = 503, body: object = None, method: str | None = None) -> None:
        """Every request to a path or for a symbol fails from now on."""
        self._add_fault(match, status, None, body, method)

    def crash_after_accepting(
        self,
        path: str = "/api/v3/order",
        method: str = "POST",
        mode: str = "drop",
        times: int = 1,
        outage_after: int = 0,
    ) -> None:
        """The next `times` matching requests are carried out (an order is stored), but the reply
        is lost: "drop" closes the connection without an answer, "503" sends a gateway error page,
        "hang" answers nothing until the server stops (a test kills the caller meanwhile).
        That is a crash between the exchange accepting an order and the caller recording it.
        `outage_after`: the next that many requests for the same symbol then fail with 503
        (the exchange stays unreachable while the caller tries to find out what happened)."""
        if mode not in ("drop", "503", "hang"):
            raise ValueError(f"mode={mode!r}: expected 'drop', '503' or 'hang'")
        with self._lock:
            self._crashes.append(_Crash(path, method.upper(), mode, times, outage_after))

    def orders(self, symbol: str | None = None) -> list[FakeOrder]:
        """Every order the account holds, oldest first (optionally one symbol's)."""
        with self._lock:
            found = list(self._orders)
        return found if symbol is None else [o for o in found if o.symbol == _symbol_id(symbol)]

    def balances(self) -> dict[str, Decimal]:
        """Free balance per asset (locked amounts of resting orders excluded)."""
        with self._lock:
            return dict(self._balances)

    def _add_fault(self, match: str, status: int, times: int | None, body: object, method: str | None = None) -> None:
        if body is None:
            body = TOO_MANY_REQUESTS if status == 429 else _gateway_page(status)
        if isinstance(body, str):
            payload, content_type = body.encode(), "text/html"
        else:
            payload, content_type = json.dumps(body).encode(), "application/json;charset=UTF-8"
        match = match if match.startswith("/") else _symbol_id(match)
        with self._lock:
            self._faults.append(_Fault(match, status, payload, content_type, times, method and method.upper()))

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def requests(self, path: str | None = None, symbol: str | None = None) -> list[Request]:
        """Every request received so far, oldest first, optionally only one path / symbol."""
        with self._lock:
            found = list(self._requests)
        if path is not None:
            found = [r for r in found if r.path == path]
        if symbol is not None:
            found = [r for r in found if r.symbol == _symbol_id(symbol)]
        return found

    # --- serving ---------------------------------------------------------------------

    def _take_fault(self, path: str, query: Mapping[str, str], method: str = "GET") -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method not in (None, method):
                    continue
                if fault.match in (path, query.get("symbol")) and fault.remaining != 0:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def _route(self, method: str, path: str, query: Mapping[str, str]) -> object:
        routes = {
            "/api/v3/ping": lambda: {},
            "/api/v3/time": lambda: {"serverTime": self.now_ms},
            "/api/v3/exchangeInfo": self._spot_exchange_info,
            "/api/v3/klines": lambda: self._klines(query),
            "/api/v3/ticker/24hr": lambda: self._ticker(query),
            "/fapi/v1/ping": lambda: {},
            "/fapi/v1/time": lambda: {"serverTime": self.now_ms},
            "/fapi/v1/exchangeInfo": self._futures_exchange_info,
            "/fapi/v1/openInterest": lambda: self._open_interest(query),
            "/fapi/v1/premiumIndex": lambda: self._premium_index(query),
            # No coin-margined contracts here, but ccxt loads their list too.
            "/dapi/v1/exchangeInfo": lambda: self._exchange_info_envelope([]),
        }
        if method != "GET" or path not in routes:
            raise LookupError(path)
        return routes[path]()

    def _exchange_info_envelope(self, symbols: list[dict]) -> dict:
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _spot_exchange_info(self) -> dict:
        symbols = []
        for symbol_id, (base, quote) in sorted(self._assets.items()):
            tick, step, max_qty = _SPOT_FILTERS.get(symbol_id, _DEFAULT_SPOT_FILTERS)
            symbols.append(
                {
                    "symbol": symbol_id,
                    "status": "TRADING",
                    "baseAsset": base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": [
                        "LIMIT",
                        "LIMIT_MAKER",
                        "MARKET",
                        "STOP_LOSS",
                        "STOP_LOSS_LIMIT",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_LIMIT",
                    ],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "otoAllowed": True,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": True,
                    "cancelReplaceAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": True,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _price(float(tick)),
                            "maxPrice": "1000000.00000000",
                            "tickSize": _price(float(tick)),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": _price(float(step)),
                            "maxQty": _price(float(max_qty)),
                            "stepSize": _price(float(step)),
                        },
                        {"filterType": "ICEBERG_PARTS", "limit": 10},
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "minQty": "0.00000000",
                            "maxQty": _price(float(max_qty) / 10),
                            "stepSize": "0.00000000",
                        },
                        {
                            "filterType": "TRAILING_DELTA",
                            "minTrailingAboveDelta": 10,
                            "maxTrailingAboveDelta": 2000,
                            "minTrailingBelowDelta": 10,
                            "maxTrailingBelowDelta": 2000,
                        },
                        {
                            "filterType": "PERCENT_PRICE_BY_SIDE",
                            "bidMultiplierUp": "5",
                            "bidMultiplierDown": "0.2",
                            "askMultiplierUp": "5",
                            "askMultiplierDown": "0.2",
                            "avgPriceMins": 5,
                        },
                        {
                            "filterType": "NOTIONAL",
                            "minNotional": "5.00000000",
                            "applyMinToMarket": True,
                            "maxNotional": "9000000.00000000",
                            "applyMaxToMarket": False,
                            "avgPriceMins": 5,
                        },
                        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT", "MARGIN"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
                }
            )
        return self._exchange_info_envelope(symbols)

    def _futures_exchange_info(self) -> dict:
        symbols = []
        for p in self.perpetuals.values():
            symbols.append(
                {
                    "symbol": p.id,
                    "pair": p.id,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000",
                    "baseAsset": p.base,
                    "quoteAsset": "USDT",
                    "marginAsset": "USDT",
                    "pricePrecision": 2,
                    "quantityPrecision": 3,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "maxMoveOrderLimit": 10000,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": p.min_price,
                            "maxPrice": p.max_price,
                            "tickSize": p.tick_size,
                        },
                        {"filterType": "LOT_SIZE", "minQty": p.step_size, "maxQty": p.max_qty, "stepSize": p.step_size},
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "minQty": p.step_size,
                            "maxQty": p.market_max_qty,
                            "stepSize": p.step_size,
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": p.min_notional},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                    "orderTypes": [
                        "LIMIT",
                        "MARKET",
                        "STOP",
                        "STOP_MARKET",
                        "TAKE_PROFIT",
                        "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET",
                    ],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                }
            )
        return self._exchange_info_envelope(symbols)

    def _candles(self, symbol_id: str, interval: str) -> tuple[np.ndarray, np.ndarray]:
        """Open times and [open, high, low, close, volume] of one file, up to the server's now."""
        key = (symbol_id, interval)
        with self._lock:
            if key not in self._series:
                frame = read_candle_file(self._files[key]).sort("ms")
                ms = frame["ms"].to_numpy()
                visible = ms <= self.now_ms  # the kline still forming is served, as Binance does
                values = frame.select("open", "high", "low", "close", "volume").to_numpy()
                self._series[key] = (ms[visible], values[visible])
            return self._series[key]

    def _klines(self, query: Mapping[str, str]) -> list[list]:
        symbol_id = _required(query, "symbol")
        interval = _required(query, "interval")
        if symbol_id not in self._assets:
            raise _BinanceError(400, -1121, "Invalid symbol.")
        if (symbol_id, interval) not in self._files:  # only the intervals that have a file
            raise _BinanceError(400, -1120, "Invalid interval.")
        limit = _int_param(query, "limit", 500)
        if not 1 <= limit <= 1000:
            raise _BinanceError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        ms, values = self._candles(symbol_id, interval)
        start, end = _int_param(query, "startTime", None), _int_param(query, "endTime", None)
        lo = 0 if start is None else int(np.searchsorted(ms, start, side="left"))
        hi = len(ms) if end is None else int(np.searchsorted(ms, end, side="right"))
        # From startTime forward; without it, the newest `limit` klines up to endTime.
        lo, hi = (lo, min(hi, lo + limit)) if start is not None else (max(lo, hi - limit), hi)
        step = timeframe_ms(interval)
        rows = []
        for open_ms, (o, h, low, c, v) in zip(ms[lo:hi].tolist(), values[lo:hi].tolist()):
            # The files hold OHLCV only: quote volume is estimated at the typical price,
            # trade count and taker volumes are left at zero.
            quote_volume = v * (h + low + c) / 3
            rows.append(
                [
                    open_ms,
                    _price(o),
                    _price(h),
                    _price(low),
                    _price(c),
                    _price(v),
                    open_ms + step - 1,
                    _price(quote_volume),
                    0,
                    _price(0),
                    _price(0),
                    "0",
                ]
            )
        return rows

    def _perpetual(self, query: Mapping[str, str]) -> Perpetual:
        symbol_id = _required(query, "symbol")
        if symbol_id not in self.perpetuals:
            raise _BinanceError(400, -1121, "Invalid symbol.")
        return self.perpetuals[symbol_id]

    def _open_interest(self, query: Mapping[str, str]) -> dict:
        p = self._perpetual(query)
        return {"symbol": p.id, "openInterest": p.open_interest, "time": self.now_ms}

    def _premium_index(self, query: Mapping[str, str]) -> dict | list[dict]:
        if "symbol" not in query:
            return [self._premium(p) for p in self.perpetuals.values()]
        return self._premium(self._perpetual(query))

    def _premium(self, p: Perpetual) -> dict:
        # The spot close stands in for the mark and index price, where a file has the pair.
        price = "0.00000000"
        if (p.id, "5m") in self._files:
            ms, values = self._candles(p.id, "5m")
            if len(ms):
                price = _price(values[-1, 3])
        return {
            "symbol": p.id,
            "markPrice": price,
            "indexPrice": price,
            "estimatedSettlePrice": price,
            "lastFundingRate": p.last_funding_rate,
            "interestRate": "0.00010000",
            "nextFundingTime": (self.now_ms // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS,
            "time": self.now_ms,
        }

    # --- signed spot endpoints (one account) -------------------------------------------

    _SIGNED_ROUTES = {
        ("POST", "/api/v3/order"): "_new_order",
        ("GET", "/api/v3/order"): "_query_order",
        ("DELETE", "/api/v3/order"): "_cancel_order",
        ("GET", "/api/v3/openOrders"): "_open_orders",
        ("GET", "/api/v3/allOrders"): "_all_orders",
        ("GET", "/api/v3/account"): "_account",
        ("GET", "/api/v3/myTrades"): "_my_trades",
        # ccxt's load_markets asks for the coin list and the margin pairs once keys are set
        # (not in sandbox mode); this account trades spot only, so it has no margin pairs.
        ("GET", "/sapi/v1/capital/config/getall"): "_coins",
        ("GET", "/sapi/v1/margin/allPairs"): "_no_margin_pairs",
        ("GET", "/sapi/v1/margin/isolated/allPairs"): "_no_margin_pairs",
    }

    def _is_signed(self, method: str, path: str) -> bool:
        return (method, path) in self._SIGNED_ROUTES

    def _signed(self, method: str, path: str, query: Mapping[str, str], api_key: str | None, payload: str) -> object:
        """Authenticate like Binance, then run the endpoint under the account lock."""
        if not api_key:
            raise _BinanceError(401, -2014, "API-key format invalid.")
        if self._api_keys is not None and api_key not in self._api_keys:
            raise _BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        _required(query, "timestamp")
        if not query.get("signature"):
            raise _BinanceError(
                400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
        if self._api_keys is not None:
            # The signature covers the query string (or body) before '&signature='.
            signed_part = payload.rsplit("&signature=", 1)[0]
            expected = hmac.new(self._api_keys[api_key].encode(), signed_part.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, query["signature"]):
                raise _BinanceError(400, -1022, "Signature for this request is not valid.")
        if (method, path) == ("POST", "/api/v3/order") and (query.get("symbol"), "5m") in self._files:
            self._candles(query["symbol"], "5m")  # loads the price series; takes the lock itself
        with self._lock:
            return getattr(self, self._SIGNED_ROUTES[(method, path)])(query)

    def _last_price(self, symbol_id: str) -> Decimal:
        """The close of the symbol's newest 5m candle up to now_ms: the price a market order gets."""
        if (symbol_id, "5m") not in self._series:  # no 5m file: nothing to price the order with
            raise _BinanceError(400, -1121, "Invalid symbol.")
        ms, values = self._series[(symbol_id, "5m")]
        if not len(ms):
            raise _BinanceError(400, -1121, "Invalid symbol.")
        return Decimal(_price(values[-1, 3]))

    def _ticker(self, query: Mapping[str, str]) -> dict:
        """GET /api/v3/ticker/24hr for one symbol: the last price is the one a market order gets
        now (`ticker_prices` overrides it, to test a price far from the ticker)."""
        symbol_id = _required(query, "symbol")
        if (symbol_id, "5m") in self._files:
            self._candles(symbol_id, "5m")
        last = self.ticker_prices.get(symbol_id) or self._last_price(symbol_id)
        return {
            "symbol": symbol_id,
            "lastPrice": _dec(last),
            "openTime": self.now_ms - 86_400_000,
            "closeTime": self.now_ms,
            "bidPrice": _dec(last),
            "askPrice": _dec(last),
            "volume": "0",
        }

    def _decimal_param(self, query: Mapping[str, str], name: str) -> Decimal | None:
        if name not in query:
            return None
        try:
            value = Decimal(query[name])
        except ArithmeticError:
            raise _BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None
        if not value.is_finite() or value <= 0:
            raise _BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'.")
        return value

    def _find_order(self, query: Mapping[str, str]) -> FakeOrder:
        symbol_id = _required(query, "symbol")
        if "orderId" in query:
            order_id = _int_param(query, "orderId", None)
            found = [o for o in self._orders if o.order_id == order_id and o.symbol == symbol_id]
        elif query.get("origClientOrderId"):
            found = [
                o for o in self._orders if o.client_order_id == query["origClientOrderId"] and o.symbol == symbol_id
            ]
        else:
            raise _BinanceError(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        if not found:
            raise _BinanceError(400, -2013, "Order does not exist.")
        return found[-1]  # a client id reused after a fill names the newest order

    def _new_order(self, query: Mapping[str, str]) -> dict:
        symbol_id = _required(query, "symbol")
        if symbol_id not in self._assets:
            raise _BinanceError(400, -1121, "Invalid symbol.")
        side = _required(query, "side")
        order_type = _required(query, "type")
        if side not in ("BUY", "SELL"):
            raise _BinanceError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        if order_type not in ("MARKET", "LIMIT"):
            raise _BinanceError(400, -1116, "Invalid orderType.")
        client_id = query.get("newClientOrderId") or f"fake-{self._next_order_id}"
        if not re.fullmatch(r"[\.A-Z\:/a-z0-9_-]{1,36}", client_id):
            raise _BinanceError(
                400,
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; "
                "legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        # Binance: the id must be unique among OPEN orders; a filled order's id may be reused.
        if any(o.client_order_id == client_id and o.status in OPEN_STATUSES for o in self._orders):
            raise _BinanceError(400, -2010, "Duplicate order sent.")
        last = self._last_price(symbol_id)
        quantity = self._decimal_param(query, "quantity")
        quote_qty = self._decimal_param(query, "quoteOrderQty")
        tick, step, max_qty = (Decimal(v) for v in _SPOT_FILTERS.get(symbol_id, _DEFAULT_SPOT_FILTERS))
        if order_type == "MARKET":
            if quantity is None and quote_qty is None:
                raise _BinanceError(
                    400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
                )
            if quantity is None:
                quantity = (quote_qty / last).quantize(step, rounding=ROUND_DOWN)
            price = last
            limit_price = Decimal(0)
        else:
            price = limit_price = self._decimal_param(query, "price")
            if quantity is None or price is None:
                raise _BinanceError(
                    400, -1102, "Mandatory parameter 'quantity' or 'price' was not sent, was empty/null, or malformed."
                )
            if price % tick:
                raise _BinanceError(400, -1013, "Filter failure: PRICE_FILTER")
        if quantity < step or quantity > max_qty or quantity % step:
            raise _BinanceError(400, -1013, "Filter failure: LOT_SIZE")
        if quantity * price < Decimal(5):
            raise _BinanceError(400, -1013, "Filter failure: NOTIONAL")
        base, quote = self._assets[symbol_id]
        spend_asset, spend = (quote, quantity * price) if side == "BUY" else (base, quantity)
        if self._balances.get(spend_asset, Decimal(0)) < spend:
            raise _BinanceError(400, -2010, "Account has insufficient balance for requested action.")
        order = FakeOrder(
            self._next_order_id,
            client_id,
            symbol_id,
            side,
            order_type,
            quantity,
            limit_price,
            self.now_ms,
            time_in_force="GTC",
        )
        self._next_order_id += 1
        if (
            order_type == "MARKET"
            or (side == "BUY" and limit_price >= last)
            or (side == "SELL" and limit_price <= last)
        ):
            self._fill(order, last, base, quote)
        else:
            # A resting limit order locks what it would spend.
            self._balances[spend_asset] -= spend
            self._locked[spend_asset] = self._locked.get(spend_asset, Decimal(0)) + spend
        self._orders.append(order)
        response_type = query.get("newOrderRespType", "FULL")
        answer = {
            "symbol": symbol_id,
            "orderId": order.order_id,
            "orderListId": -1,
            "clientOrderId": client_id,
            "transactTime": self.now_ms,
        }
        if response_type in ("RESULT", "FULL"):
            answer.update(
                {
                    k: v
                    for k, v in order.as_binance().items()
                    if k not in ("stopPrice", "icebergQty", "time", "updateTime", "isWorking")
                }
            )
        if response_type == "FULL":
            answer["fills"] = [
                {k: f[k] for k in ("price", "qty", "commission", "commissionAsset", "tradeId")} for f in order.fills
            ]
        return answer

    def _fill(self, order: FakeOrder, price: Decimal, base: str, quote: str) -> None:
        """Fill the whole order at `price`; the fee comes out of the asset received."""
        quote_qty = order.orig_qty * price
        if order.side == "BUY":
            commission, asset = (order.orig_qty * TAKER_FEE).quantize(Decimal("1e-8")), base
            self._balances[quote] = self._balances.get(quote, Decimal(0)) - quote_qty
            self._balances[base] = self._balances.get(base, Decimal(0)) + order.orig_qty - commission
        else:
            commission, asset = (quote_qty * TAKER_FEE).quantize(Decimal("1e-8")), quote
            self._balances[base] = self._balances.get(base, Decimal(0)) - order.orig_qty
            self._balances[quote] = self._balances.get(quote, Decimal(0)) + quote_qty - commission
        order.status, order.executed_qty, order.cummulative_quote_qty = "FILLED", order.orig_qty, quote_qty
        order.update_ms = self.now_ms
        order.fills.append(
            {
                "price": _dec(price),
                "qty": _dec(order.orig_qty),
                "commission": _dec(commission),
                "commissionAsset": asset,
                "tradeId": self._next_trade_id,
            }
        )
        self._next_trade_id += 1

    def _query_order(self, query: Mapping[str, str]) -> dict:
        return self._find_order(query).as_binance()

    def _cancel_order(self, query: Mapping[str, str]) -> dict:
        order = self._find_order(query)
        if order.status not in OPEN_STATUSES:
            raise _BinanceError(400, -2011, "Unknown order sent.")
        base, quote = self._assets[order.symbol]
        asset, amount = (quote, order.orig_qty * order.price) if order.side == "BUY" else (base, order.orig_qty)
        self._locked[asset] -= amount
        self._balances[asset] = self._balances.get(asset, Decimal(0)) + amount
        order.status, order.update_ms = "CANCELED", self.now_ms
        answer = order.as_binance()
        answer["origClientOrderId"] = order.client_order_id
        answer["clientOrderId"] = f"cancel-{order.order_id}"
        answer["transactTime"] = self.now_ms
        return answer

    def _open_orders(self, query: Mapping[str, str]) -> list[dict]:
        symbol_id = query.get("symbol")
        return [o.as_binance() for o in self._orders if o.status in OPEN_STATUSES and symbol_id in (None, o.symbol)]

    def _all_orders(self, query: Mapping[str, str]) -> list[dict]:
        symbol_id = _required(query, "symbol")
        start = _int_param(query, "startTime", None)
        limit = _int_param(query, "limit", 500)
        found = [o for o in self._orders if o.symbol == symbol_id and (start is None or o.time_ms >= start)]
        return [o.as_binance() for o in found[-limit:]]

    def _account(self, query: Mapping[str, str]) -> dict:
        assets = sorted(set(self._balances) | set(self._locked))
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": "0.00100000",
                "taker": "0.00100000",
                "buyer": "0.00000000",
                "seller": "0.00000000",
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.now_ms,
            "accountType": "SPOT",
            "balances": [
                {
                    "asset": a,
                    "free": _dec(self._balances.get(a, Decimal(0))),
                    "locked": _dec(self._locked.get(a, Decimal(0))),
                }
                for a in assets
            ],
            "permissions": ["SPOT"],
            "uid": 1,
        }

    def _my_trades(self, query: Mapping[str, str]) -> list[dict]:
        symbol_id = _required(query, "symbol")
        order_id = _int_param(query, "orderId", None)
        trades = []
        for o in self._orders:
            if o.symbol != symbol_id or (order_id is not None and o.order_id != order_id):
                continue
            for f in o.fills:
                trades.append(
                    {
                        "symbol": o.symbol,
                        "id": f["tradeId"],
                        "orderId": o.order_id,
                        "orderListId": -1,
                        "price": f["price"],
                        "qty": f["qty"],
                        "quoteQty": _dec(Decimal(f["price"]) * Decimal(f["qty"])),
                        "commission": f["commission"],
                        "commissionAsset": f["commissionAsset"],
                        "time": o.update_ms,
                        "isBuyer": o.side == "BUY",
                        "isMaker": False,
                        "isBestMatch": True,
                    }
                )
        return trades

    def _coins(self, query: Mapping[str, str]) -> list[dict]:
        coins = sorted({asset for pair in self._assets.values() for asset in pair} | set(self._balances))
        return [
            {
                "coin": coin,
                "name": coin,
                "depositAllEnable": True,
                "withdrawAllEnable": True,
                "free": _dec(self._balances.get(coin, Decimal(0))),
                "locked": _dec(self._locked.get(coin, Decimal(0))),
                "freeze": "0",
                "withdrawing": "0",
                "ipoing": "0",
                "ipoable": "0",
                "storage": "0",
                "isLegalMoney": False,
                "trading": True,
                "networkList": [
                    {
                        "network": coin,
                        "coin": coin,
                        "name": coin,
                        "isDefault": True,
                        "depositEnable": True,
                        "withdrawEnable": True,
                        "withdrawFee": "0.00000000",
                        "withdrawMin": "0.00000000",
                        "withdrawMax": "9999999999.00000000",
                        "withdrawIntegerMultiple": "0.00000001",
                    }
                ],
            }
            for coin in coins
        ]

    def _no_margin_pairs(self, query: Mapping[str, str]) -> list[dict]:
        return []

    def _take_crash(self, method: str, path: str) -> _Crash | None:
        with self._lock:
            for crash in self._crashes:
                if crash.path == path and crash.method == method and crash.remaining > 0:
                    crash.remaining -= 1
                    return crash
        return None


def _required(query: Mapping[str, str], name: str) -> str:
    if not query.get(name):
        raise _BinanceError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return query[name]


def _int_param(query: Mapping[str, str], name: str, default: int | None) -> int | None:
    if name not in query:
        return default
    try:
        return int(query[name])
    except ValueError:
        raise _BinanceError(
            400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        ) from None


def _gateway_page(status: int) -> str:
    """What a load balancer in front of an API answers with on a 5xx: HTML, not JSON."""
    phrase = HTTPStatus(status).phrase
    return (
        f"<html><head><title>{status} {phrase}</title></head>"
        f"<body><center><h1>{status} {phrase}</h1></center></body></html>"
    )


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-binance"

    def _handle(self) -> None:
        fake: FakeBinance = self.server.fake
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        # Signed POSTs carry their parameters form-encoded in the body, as ccxt sends them.
        length = int(self.headers.get("Content-Length") or 0)
        payload = self.rfile.read(length).decode() if length else parts.query
        if length:
            query.update(parse_qsl(payload))
        fault = fake._take_fault(parts.path, query, self.command)
        crash = None
        if fault is not None:
            status, body, content_type = fault.status, fault.body, fault.content_type
        else:
            content_type = "application/json;charset=UTF-8"
            try:
                if fake._is_signed(self.command, parts.path):
                    answer = fake._signed(self.command, parts.path, query, self.headers.get("X-MBX-APIKEY"), payload)
                    crash = fake._take_crash(self.command, parts.path)  # only once the request was carried out
                    if crash is not None and crash.outage_after and query.get("symbol"):
                        fake._add_fault(query["symbol"], 503, crash.outage_after, None)
                else:
                    answer = fake._route(self.command, parts.path, query)
                status, body = 200, json.dumps(answer).encode()
            except _BinanceError as exc:
                status, body = exc.status, json.dumps(exc.body).encode()
            except LookupError:
                status, body, content_type = 404, b"<html><body><h2>404 Not found</h2></body></html>", "text/html"
        if crash is not None and crash.mode in ("drop", "hang"):
            fake._record(Request(self.command, parts.path, query, 0))  # 0: no reply was sent
            if crash.mode == "hang":
                fake._stopping.wait(timeout=120)
            self.close_connection = True
            return
        if crash is not None:
            status, body, content_type = 503, _gateway_page(503).encode(), "text/html"
        fake._record(Request(self.command, parts.path, query, status))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 429:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, format, *args) -> None:
        pass  # every request is in FakeBinance.requests(); stderr stays quiet
