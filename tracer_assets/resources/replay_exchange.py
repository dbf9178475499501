"""The offline exchange: serves real candle files through ccxt's market-data calls.

It answers `load_markets`, `fetch_ohlcv(symbol, timeframe, since, limit)`, `milliseconds`
and `timeframes` as a ccxt exchange does, so everything above it is the same code whether
the candles come from Binance or from disk. A replay clock decides which candles exist yet:
by default it stands still at the end of the data (every candle visible); with
`TRACER_REPLAY_START` it runs, so a live-looking loop sees new candles appear offline.

No Dagster here.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import ccxt
import numpy as np
import polars as pl

from tracer_assets.market.timeframes import timeframe_ms

# freqtrade's file names, PAIR-TF[-KIND].EXT: BTC_USDT-5m.feather, XRP_USDT_USDT-1h-futures.feather,
# XRP_USDT_USDT-8h-funding_rate.feather. The one home of this pattern: research/cli.py and the
# tests' fake Binance import it. Candles are the files without a kind, or of kind spot or futures.
CANDLE_FILE_NAME = re.compile(
    r"^(?P<pair>(?P<base>[A-Za-z0-9]+)_(?P<quote>[A-Za-z0-9]+)(?:_(?P<settle>[A-Za-z0-9]+))?)"
    r"-(?P<tf>\d+[smhdwMy])(?:-(?P<kind>futures|spot|mark|index|funding_rate))?\.(?P<ext>feather|parquet|json)$"
)
_CANDLE_KINDS = (None, "spot", "futures")
_EXT_PREFERENCE = ("parquet", "feather", "json")


def pair_to_symbol(pair: str) -> str:
    """freqtrade's file pair to a ccxt symbol: BTC_USDT -> BTC/USDT, XRP_USDT_USDT -> XRP/USDT:USDT."""
    parts = pair.split("_")
    symbol = f"{parts[0]}/{parts[1]}"
    return f"{symbol}:{parts[2]}" if len(parts) == 3 else symbol


def read_candle_file(path: Path) -> pl.DataFrame:
    """Read one candle file (freqtrade feather/json, or parquet) into ms + OHLCV columns."""
    try:
        if path.suffix == ".json":
            rows = json.loads(path.read_text())
            frame = pl.DataFrame(
                rows,
                schema=["ms", "open", "high", "low", "close", "volume"],
                orient="row",
                schema_overrides={"ms": pl.Int64},
            )
        else:
            raw = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ipc(path)
            time_column = "date" if "date" in raw.columns else "ts"
            stamp = raw[time_column]
            if stamp.dtype.is_integer():
                ms = stamp.cast(pl.Int64)
            else:
                ms = stamp.dt.epoch("ms")
            frame = raw.select(*["open", "high", "low", "close", "volume"]).with_columns(ms=ms)
    except Exception as exc:  # name the file: a user pointed TRACER_REPLAY_DIR at it
        raise ValueError(f"cannot read candle file {path}: {exc}") from exc
    return frame.select(
        pl.col("ms").cast(pl.Int64), *[pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")]
    )


@dataclass(frozen=True)
class _Series:
    ms: np.ndarray  # int64 open times, in file order
    values: np.ndarray  # float64 [n, 5]: open, high, low, close, volume
    sorted: bool


@functools.lru_cache(maxsize=64)
def _load_series(path: Path, mtime_ns: int, size: int) -> _Series:
    """One file's candles, kept for the process: every run builds a new ReplayExchange, and
    re-reading the files cost a tick 0.1 s. Keyed by mtime and size, so a changed file is re-read."""
    frame = read_candle_file(path)
    ms = frame["ms"].to_numpy()
    values = frame.select("open", "high", "low", "close", "volume").to_numpy()
    ms.setflags(write=False)  # shared between exchanges: nobody may change them in place
    values.setflags(write=False)
    return _Series(ms=ms, values=values, sorted=bool(np.all(np.diff(ms) > 0)))


class ReplayClock:
    """Maps wall-clock time onto the dataset.

    Stopped (start=None): always the end of the data. Running: at wall-clock `anchor` it
    shows `start`, and moves `speed` dataset seconds per wall second, never past the end.
    The anchor defaults to 00:00 UTC of the current day, so every process started today
    (a CLI run, the daemon, the UI) reads the same replay time without sharing state.
    """

    def __init__(
        self,
        data_end_ms: int,
        start: datetime | None = None,
        speed: float = 1.0,
        anchor: datetime | None = None,
        wall_seconds: Callable[[], float] = time.time,
    ):
        self.data_end_ms = data_end_ms
        self.start = start
        self.speed = speed
        self.anchor = anchor
        self.wall_seconds = wall_seconds

    def now_ms(self) -> int:
        if self.start is None:
            return self.data_end_ms
        wall = self.wall_seconds()
        anchor = self.anchor
        if anchor is None:
            day = datetime.fromtimestamp(wall, tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            anchor = day
        elapsed = (wall - anchor.timestamp()) * self.speed
        return min(int((self.start.timestamp() + elapsed) * 1000), self.data_end_ms)


class ReplayExchange:
    """A ccxt-shaped exchange over a folder of candle files (freqtrade's layout)."""

    id = "replay"
    has = {"fetchOHLCV": True, "fetchOpenInterest": False, "fetchFundingRate": False}

    def __init__(
        self,
        data_dir: Path | str,
        symbols: Iterable[str] | None = None,
        base_timeframe: str = "5m",
        clock_start: datetime | None = None,
        clock_speed: float = 1.0,
        clock_anchor: datetime | None = None,
        wall_seconds: Callable[[], float] = time.time,
    ):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise ValueError(f"TRACER_REPLAY_DIR {self.data_dir} is not a folder of candle files")
        self._files = self._scan(self.data_dir)
        if not self._files:
            raise ValueError(
                f"TRACER_REPLAY_DIR {self.data_dir} holds no candle files named like BTC_USDT-5m.feather/.json/.parquet"
            )
        self.base_timeframe = base_timeframe
        self.symbols = tuple(symbols) if symbols else tuple(sorted({s for s, _ in self._files}))
        missing = [s for s in self.symbols if (s, base_timeframe) not in self._files]
        if missing:
            raise ValueError(
                f"the replay data in {self.data_dir} has no {base_timeframe} candles for {', '.join(missing)}; "
                f"it has: {', '.join(sorted({s for s, tf in self._files if tf == base_timeframe})) or 'none'}"
            )
        self._cache: dict[tuple[str, str], _Series] = {}
        self._lock = threading.Lock()
        step = timeframe_ms(base_timeframe)
        # The data range comes from every configured symbol's base file: an empty one has no
        # range, and would otherwise fail the code location with numpy's "zero-size array".
        empty = [s for s in self.symbols if self._series(s, base_timeframe).ms.size == 0]
        if empty:
            raise ValueError(
                "the replay data holds no candles in "
                + "; ".join(f"{self._files[(s, base_timeframe)]} ({s} {base_timeframe})" for s in empty)
                + ": remove the file, fill it, or leave the symbol out of TRACER_SYMBOLS"
            )
        # The clock ends where every configured symbol still has data: the common end.
        self.data_start_ms = min(int(self._series(s, base_timeframe).ms.min()) for s in self.symbols)
        self.data_end_ms = min(int(self._series(s, base_timeframe).ms.max()) + step for s in self.symbols)
        self.clock = ReplayClock(self.data_end_ms, clock_start, clock_speed, clock_anchor, wall_seconds)

    @staticmethod
    def _scan(folder: Path) -> dict[tuple[str, str], Path]:
        found: dict[tuple[str, str], Path] = {}
        for path in sorted(
            folder.iterdir(),
            key=lambda p: _EXT_PREFERENCE.index(p.suffix[1:]) if p.suffix[1:] in _EXT_PREFERENCE else 9,
        ):
            match = CANDLE_FILE_NAME.match(path.name)
            if match and match["kind"] in _CANDLE_KINDS:
                found.setdefault((pair_to_symbol(match["pair"]), match["tf"]), path)
        return found

    def _series(self, symbol: str, timeframe: str) -> _Series:
        key = (symbol, timeframe)
        with self._lock:
            if key not in self._cache:
                if key not in self._files:
                    if not any(s == symbol for s, _ in self._files):
                        raise ccxt.BadSymbol(f"replay has no market {symbol}")
                    raise ccxt.BadRequest(f"replay has no {timeframe} candles for {symbol}")
                path = self._files[key]
                stat = path.stat()
                try:
                    self._cache[key] = _load_series(path, stat.st_mtime_ns, stat.st_size)
                except ValueError as exc:  # the reader names the file; add whose candles it holds
                    raise ValueError(f"{exc} (the {timeframe} candles of {symbol})") from exc
            return self._cache[key]

    # --- ccxt's market-data surface -------------------------------------------------

    @property
    def timeframes(self) -> dict[str, str]:
        return {tf: tf for _, tf in sorted(self._files, key=lambda k: timeframe_ms(k[1]))}

    def milliseconds(self) -> int:
        return self.clock.now_ms()

    def load_markets(self, reload: bool = False) -> dict[str, dict]:
        markets = {}
        for symbol in sorted({s for s, _ in self._files}):
            base, quote = symbol.split(":")[0].split("/")
            markets[symbol] = {
                "id": symbol.replace("/", "").replace(":", ""),
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "active": True,
                "spot": ":" not in symbol,
                "type": "spot" if ":" not in symbol else "swap",
                "precision": {"amount": 1e-8, "price": 1e-8},
                "limits": {"amount": {"min": 1e-8}, "cost": {"min": 5.0}},
            }
        return markets

    def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "5m",
        since: int | None = None,
        limit: int | None = None,
        params: dict | None = None,
    ) -> list[list[float]]:
        """Closed candles of `symbol`, oldest first, from `since` (or the newest `limit`)."""
        series = self._series(symbol, timeframe)
        limit = 1000 if limit is None else int(limit)
        visible_until = self.clock.now_ms() - timeframe_ms(timeframe)  # open time of the newest closed candle
        ms = series.ms
        if series.sorted:
            hi = int(np.searchsorted(ms, visible_until, side="right"))
            lo = int(np.searchsorted(ms, since, side="left")) if since is not None else max(0, hi - limit)
            idx = np.arange(lo, min(hi, lo + limit))
        else:  # a damaged file: serve it as it is, in file order, and let validation speak
            mask = ms <= visible_until
            if since is not None:
                mask &= ms >= since
            idx = np.flatnonzero(mask)
            idx = idx[:limit] if since is not None else idx[-limit:]
        rows = np.column_stack([ms[idx].astype(np.float64), series.values[idx]]).tolist()
        for row in rows:
            row[0] = int(row[0])
        return rows

    def fetch_open_interest(self, symbol: str, params: dict | None = None):
        raise ccxt.NotSupported("replay serves spot candles only: no open interest")

    def fetch_funding_rate(self, symbol: str, params: dict | None = None):
        raise ccxt.NotSupported("replay serves spot candles only: no funding rate")
