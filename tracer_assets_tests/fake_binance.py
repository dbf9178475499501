"""A local stand-in for Binance's public REST API, so tests can drive ccxt's real `binance` client.

It answers what ccxt 4.5.90 sends for `load_markets`, `fetch_ohlcv`, `fetch_time`,
`fetch_open_interest` and `fetch_funding_rate` (no signed endpoint exists here), serves real
candles from the bundled files, records every request, and fails on demand:

    with FakeBinance() as server:
        exchange = make_ccxt_exchange("binance", api_urls={"*": server.url})
        server.fail_next("/api/v3/klines", status=429)
        server.fail_always("ETHUSDT", status=503)
        ...
        server.requests("/api/v3/klines", symbol="BTC/USDT")

The server's clock stands still at `now_ms` (by default the end of the bundled BTC candles,
2024-09-06 04:45 UTC): klines opening after it do not exist yet.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np

import tracer_assets
from tracer_assets.market.timeframes import timeframe_ms
from tracer_assets.resources.replay_exchange import read_candle_file

BUNDLED_DATA = Path(tracer_assets.__file__).parent / "data" / "binance_spot_2024"
DATA_END_MS = int(datetime(2024, 9, 6, 4, 45, tzinfo=timezone.utc).timestamp() * 1000)
FUNDING_PERIOD_MS = 8 * 3_600_000

# Spot files only (BTC_USDT-5m.parquet); futures files name a settle currency too.
_SPOT_FILE = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)-(?P<interval>\d+[mhdwM])\.(parquet|feather|json)$")
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


class _BinanceError(Exception):
    def __init__(self, status: int, code: int, msg: str):
        super().__init__(msg)
        self.status, self.body = status, {"code": code, "msg": msg}


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
    ):
        self.now_ms = now_ms
        self.perpetuals = {p.id: p for p in perpetuals}
        self._files: dict[tuple[str, str], Path] = {}
        self._assets: dict[str, tuple[str, str]] = {}  # symbol id -> (base, quote)
        for path in sorted(Path(data_dir).iterdir(), key=lambda p: _FORMATS.get(p.suffix, 9)):
            match = _SPOT_FILE.match(path.name)
            if match:
                symbol_id = match["base"] + match["quote"]
                self._files.setdefault((symbol_id, match["interval"]), path)
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
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # --- what tests control and inspect ------------------------------------------------

    def fail_next(self, match: str, status: int = 429, times: int = 1, body: object = None) -> None:
        """The next `times` requests to a path ('/api/v3/klines') or for a symbol ('ETH/USDT') fail."""
        self._add_fault(match, status, times, body)

    def fail_always(self, match: str, status: int = 503, body: object = None) -> None:
        """Every request to a path or for a symbol fails from now on."""
        self._add_fault(match, status, None, body)

    def _add_fault(self, match: str, status: int, times: int | None, body: object) -> None:
        if body is None:
            body = TOO_MANY_REQUESTS if status == 429 else _gateway_page(status)
        if isinstance(body, str):
            payload, content_type = body.encode(), "text/html"
        else:
            payload, content_type = json.dumps(body).encode(), "application/json;charset=UTF-8"
        match = match if match.startswith("/") else _symbol_id(match)
        with self._lock:
            self._faults.append(_Fault(match, status, payload, content_type, times))

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

    def _take_fault(self, path: str, query: Mapping[str, str]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
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
            symbols.append({
                "symbol": symbol_id,
                "status": "TRADING",
                "baseAsset": base,
                "baseAssetPrecision": 8,
                "quoteAsset": quote,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8,
                "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": True,
                "ocoAllowed": True,
                "otoAllowed": True,
                "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": True,
                "cancelReplaceAllowed": True,
                "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": True,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": _price(float(tick)), "maxPrice": "1000000.00000000", "tickSize": _price(float(tick))},
                    {"filterType": "LOT_SIZE", "minQty": _price(float(step)), "maxQty": _price(float(max_qty)), "stepSize": _price(float(step))},
                    {"filterType": "ICEBERG_PARTS", "limit": 10},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": _price(float(max_qty) / 10), "stepSize": "0.00000000"},
                    {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
                    {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2", "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
                    {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True, "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                    {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
                ],
                "permissions": [],
                "permissionSets": [["SPOT", "MARGIN"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            })
        return self._exchange_info_envelope(symbols)

    def _futures_exchange_info(self) -> dict:
        symbols = []
        for p in self.perpetuals.values():
            symbols.append({
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
                    {"filterType": "PRICE_FILTER", "minPrice": p.min_price, "maxPrice": p.max_price, "tickSize": p.tick_size},
                    {"filterType": "LOT_SIZE", "minQty": p.step_size, "maxQty": p.max_qty, "stepSize": p.step_size},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": p.step_size, "maxQty": p.market_max_qty, "stepSize": p.step_size},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                    {"filterType": "MIN_NOTIONAL", "notional": p.min_notional},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
            })
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
            rows.append([open_ms, _price(o), _price(h), _price(low), _price(c), _price(v), open_ms + step - 1,
                         _price(quote_volume), 0, _price(0), _price(0), "0"])
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
        raise _BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.") from None


def _gateway_page(status: int) -> str:
    """What a load balancer in front of an API answers with on a 5xx: HTML, not JSON."""
    phrase = HTTPStatus(status).phrase
    return f"<html><head><title>{status} {phrase}</title></head><body><center><h1>{status} {phrase}</h1></center></body></html>"


class _Handler(BaseHTTPRequestHandler):
    server_version = "fake-binance"

    def _handle(self) -> None:
        fake: FakeBinance = self.server.fake
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        fault = fake._take_fault(parts.path, query)
        if fault is not None:
            status, body, content_type = fault.status, fault.body, fault.content_type
        else:
            content_type = "application/json;charset=UTF-8"
            try:
                status, body = 200, json.dumps(fake._route(self.command, parts.path, query)).encode()
            except _BinanceError as exc:
                status, body = exc.status, json.dumps(exc.body).encode()
            except LookupError:
                status, body, content_type = 404, b"<html><body><h2>404 Not found</h2></body></html>", "text/html"
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
