"""`tracer forward`: the forward test (trading/forward.py) over the candles and research stored in
the DuckDB file (read only), its tables written as Parquet files beside a summary, and what it did
printed: the strategies, the trades, PnL, drawdown, buy-and-hold, and the parity with the
backtest engine trade by trade. No Dagster."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl

from tracer_assets.market.keys import OHLCV_TABLE
from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.research.backtest import default_combo, format_combo
from tracer_assets.research.engine import FillRules
from tracer_assets.research.keys import STRATEGIES_TABLE
from tracer_assets.research.spec import builtin_spec, load_spec
from tracer_assets.tables import table_exists
from tracer_assets.trading.accounts import REPLAY_MARKET
from tracer_assets.trading.forward import OPEN_LIMITS, ForwardSeries, compare_with_backtest, forward_test, summary
from tracer_assets.trading.paper import PaperBroker
from tracer_assets.trading.risk import MarketRules, RiskLimits
from tracer_assets.trading.store import QUOTE
from tracer_assets.trading.strategy_book import candles_up_to, edge, strategy_book
from tracer_assets.trading.strategy_call import PickedStrategy, pick_strategy

DEFAULT_DAYS = 7
MAX_PARITY_NOTES = 10  # differences the daily report lists


class ForwardError(ValueError):
    """Bad input or missing data; the message says what to do."""


def parse_day(value: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ForwardError(f"{option}={value!r}: expected an ISO date like 2024-08-01 (UTC)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def chosen_strategy(connection, name: str) -> tuple[str, object]:
    """--strategy: a stored strategy's id or name (the newest version), else a built-in's name."""
    if table_exists(connection, STRATEGIES_TABLE):
        row = connection.execute(
            f"SELECT strategy_id, spec FROM {STRATEGIES_TABLE} WHERE strategy_id = ? OR name = ? "
            "ORDER BY version DESC LIMIT 1",
            [name, name],
        ).fetchone()
        if row is not None:
            return row[0], load_spec(row[1])
    try:
        return name, builtin_spec(name)
    except KeyError as error:
        raise ForwardError(f"--strategy {name!r}: no stored strategy has this id or name; {error.args[0]}") from None


def load_series(
    connection, symbols: Sequence[str], timeframe: str, start: datetime, end: datetime, strategy: str | None
) -> list[ForwardSeries]:
    if not table_exists(connection, OHLCV_TABLE):
        raise ForwardError(f"{OHLCV_TABLE} does not exist in this DuckDB file: run `make demo` first")
    kept, _, out_of_sample = strategy_book(connection)
    forced = chosen_strategy(connection, strategy) if strategy else None
    series = []
    for symbol in symbols:
        if forced is not None:
            sid, spec = forced
            picked = PickedStrategy(sid, spec, default_combo(spec), None)
            edge_of = {}
        else:
            rows = out_of_sample.get((symbol, timeframe), [])
            picked = pick_strategy(kept, rows)
            if picked is None:
                raise ForwardError(
                    f"no kept strategy has an out-of-sample score on {symbol} {timeframe}: run the research "
                    "(`make demo`, or research_job) or name one with --strategy"
                )
            edge_of = edge(picked, rows)
        warm_up = candles_up_to(connection, symbol, timeframe, start, inclusive=False)
        window = connection.sql(
            f"SELECT ts, open, high, low, close, volume FROM {OHLCV_TABLE} "
            "WHERE symbol = ? AND timeframe = ? AND ts >= ? AND ts < ? ORDER BY ts",
            params=[symbol, timeframe, start, end],
        ).pl()
        if window.is_empty():
            raise ForwardError(
                f"no {timeframe} candles of {symbol} between {start:%Y-%m-%d %H:%M} and {end:%Y-%m-%d %H:%M}"
            )
        frame = pl.concat([warm_up, window]).with_columns(pl.col("ts").dt.convert_time_zone("UTC"))
        series.append(ForwardSeries(symbol, timeframe, picked, frame, **edge_of))
    return series


def data_end(connection, timeframe: str) -> datetime:
    """The close of the newest stored candle of `timeframe`: the default end of the window."""
    row = connection.execute(f"SELECT max(ts) FROM {OHLCV_TABLE} WHERE timeframe = ?", [timeframe]).fetchone()
    if row is None or row[0] is None:
        raise ForwardError(f"no {timeframe} candles in {OHLCV_TABLE}: run `make demo` first")
    return row[0].astimezone(UTC) + timedelta(seconds=timeframe_seconds(timeframe))


def write_outputs(folder: Path, tables: dict[str, pl.DataFrame], facts: dict) -> None:
    """Every file into a new folder beside the target, then swapped in: a crash leaves the
    previous result or the new one, never half of each."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = folder.with_name(folder.name + ".writing")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    for name, frame in tables.items():
        frame.write_parquet(building / f"{name}.parquet")
    (building / "summary.json").write_text(json.dumps(facts, indent=2, default=str))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        folder.rename(old)
    building.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def forward_run(
    settings, series: Sequence[ForwardSeries], start: datetime, end: datetime, progress=None, open_limits=False
):
    """The forward test of `series` with the settings' paper account, risk limits (OPEN_LIMITS
    with `open_limits`), fee and slippage, and its parity with the engine on the same fee and slippage."""
    trading = settings.trading
    if open_limits:  # and no Kelly: a strategy's edge would refuse or shrink its orders
        series = [replace(s, win_rate=None, payoff_ratio=None) for s in series]
    result = forward_test(
        series,
        start,
        end,
        # Cash only (SIM_BASE_BALANCE is the paper account's): equity is cash plus the positions.
        PaperBroker(QUOTE, trading.sim_quote_balance, None, trading.fee_rate, trading.slippage_bps),
        OPEN_LIMITS if open_limits else RiskLimits.from_settings(settings),
        lambda symbol: MarketRules(symbol=symbol, **REPLAY_MARKET),
        trading.order_amount,
        progress,
    )
    rules = FillRules(fee=float(trading.fee_rate), slippage_bps=float(trading.slippage_bps))
    return result, compare_with_backtest(series, result, rules)


def report_parity(connection, settings, days: int = DEFAULT_DAYS) -> tuple[list, datetime, datetime] | dict:
    """What the daily report's parity check replays: the kept strategies' series over the last
    `days` of the base timeframe (read here, in the caller's connection), or a skipped record."""
    timeframe = settings.market.base_timeframe
    try:
        end = data_end(connection, timeframe) if table_exists(connection, OHLCV_TABLE) else None
        if end is None:
            raise ForwardError(f"no {OHLCV_TABLE}")
        start = end - timedelta(days=days)
        return load_series(connection, settings.market.symbols, timeframe, start, end, None), start, end
    except ForwardError as error:
        now = datetime.now(UTC)
        return parity_record(now, now, timeframe, None, skipped=str(error))


def parity_record(start, end, timeframe: str, parity, skipped: str | None = None) -> dict:
    """The daily report's `parity` (reports.report.ForwardParity) from a comparison."""
    if parity is None:
        counts = {"identical": 0, "compared": 0, "open_at_end": 0, "differences": []}
    else:
        different = parity.rows.filter(pl.col("identical").is_not_null() & ~pl.col("identical"))
        counts = {
            "identical": parity.matched,
            "compared": parity.compared,
            "open_at_end": parity.rows["identical"].null_count(),
            "differences": [
                f"{row['symbol']} entry {row['entry_ts']:%Y-%m-%d %H:%M}: {row['note']}"
                for row in different.head(MAX_PARITY_NOTES).iter_rows(named=True)
            ],
        }
    return {"start": start, "end": end, "timeframe": timeframe, "skipped": skipped, **counts}


def run(args, settings, out=None) -> int:
    out = out or sys.stdout  # looked up now: a test's captured stdout, a redirected one
    timeframe = args.timeframe or settings.market.base_timeframe
    if timeframe not in settings.market.all_timeframes:
        raise ForwardError(f"--timeframe {timeframe}: not one of {', '.join(settings.market.all_timeframes)}")
    symbols = args.symbols.split(",") if args.symbols else list(settings.market.symbols)
    path = Path(settings.duckdb_path)
    if not path.exists():
        raise ForwardError(f"{path} does not exist: run `make demo` first (or set TRACER_DUCKDB_PATH)")
    try:
        connection = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as error:
        raise ForwardError(f"{path} is held by another process (make dev?): {error}") from None
    with connection:
        end = parse_day(args.end, "--end") if args.end else data_end(connection, timeframe)
        start = parse_day(args.start, "--start") if args.start else end - timedelta(days=DEFAULT_DAYS)
        if not start < end:
            raise ForwardError(f"--start {start:%Y-%m-%d %H:%M} must be before --end {end:%Y-%m-%d %H:%M}")
        series = load_series(connection, symbols, timeframe, start, end, args.strategy)
    initial = settings.trading.sim_quote_balance
    limits = (
        "risk limits that never bind, no Kelly (--open-limits)" if args.open_limits else "the settings' risk limits"
    )
    print(
        f"Forward test {start:%Y-%m-%d %H:%M} -> {end:%Y-%m-%d %H:%M} UTC on {timeframe}, {initial} USDT, {limits}:",
        file=out,
    )
    for s in series:
        print(
            f"  {s.symbol:<10} {s.picked.spec.name} ({s.picked.strategy_id}) {format_combo(s.picked.combo)}", file=out
        )
    shown = {"next": 0.25}

    def progress(done: int, total: int) -> None:
        if total and done / total >= shown["next"]:
            print(f"  ... {done:,} of {total:,} candles", file=out, flush=True)
            shown["next"] += 0.25

    began = datetime.now(UTC)
    result, parity = forward_run(settings, series, start, end, progress, args.open_limits)
    seconds = (datetime.now(UTC) - began).total_seconds()
    facts = summary(result, series, initial)
    facts |= {"seconds": round(seconds, 2), "parity": {"identical": parity.matched, "compared": parity.compared}}
    trades = result.trades()
    folder = Path(args.output_dir) / f"{start:%Y%m%dT%H%M}_{end:%Y%m%dT%H%M}_{timeframe}"
    write_outputs(
        folder,
        {
            "decisions": pl.DataFrame(result.decisions, infer_schema_length=None),
            "orders": pl.DataFrame(result.orders, infer_schema_length=None),
            "trades": trades,
            "equity": pl.DataFrame(result.equity, infer_schema_length=None),
            "parity": parity.rows,
        },
        facts,
    )
    print_report(facts, trades, parity, out)
    print(f"Files: {folder}/ (decisions, orders, trades, equity, parity .parquet; summary.json)", file=out)
    return 0


def print_report(facts: dict, trades: pl.DataFrame, parity, out) -> None:
    closed = trades.filter(pl.col("exit_ts").is_not_null())
    print(f"\nTrades ({closed.height} closed, {facts['trades_open']} open at the end; the last 15):", file=out)
    for row in closed.tail(15).iter_rows(named=True):
        print(
            f"  {row['symbol']:<10} {row['entry_ts']:%m-%d %H:%M} @ {float(row['entry_price']):<12.6g} -> "
            f"{row['exit_ts']:%m-%d %H:%M} @ {float(row['exit_price']):<12.6g} {row['exit_reason']:<8} "
            f"PnL {float(row['realized_pnl']):+9.4f}",
            file=out,
        )
    holds = ", ".join(f"{s} {r:+.2%}" for s, r in facts["buy_and_hold"].items())
    win_rate = "n/a" if facts["win_rate"] is None else f"{facts['win_rate']:.0%}"
    print(
        f"\nEquity {Decimal(facts['initial_equity']):.2f} -> {Decimal(facts['final_equity']):.2f} USDT "
        f"(PnL {Decimal(facts['pnl']):+.2f}, {facts['return']:+.3%}), max drawdown {facts['max_drawdown']:.3%}, "
        f"win rate {win_rate}, fees {Decimal(facts['fees']):.2f}, {facts['orders']} orders "
        f"({facts['orders_refused']} refused by the risk manager)",
        file=out,
    )
    if facts["buy_and_hold_mean"] is not None:
        print(f"Buy and hold over the window: {holds} (mean {facts['buy_and_hold_mean']:+.2%})", file=out)
    print(
        f"{facts['candles']:,} candles in {facts['seconds']:.1f} s "
        f"({facts['candles'] / max(facts['seconds'], 1e-9):,.0f} candles x symbols per second)",
        file=out,
    )
    print(
        f"\nParity with the backtest engine (same spec, parameters, candles, fee and slippage): "
        f"{parity.matched} of {parity.compared} closed trades identical in entry and exit candle, fill prices, "
        "fees per unit and exit reason. Sizes differ by design: the risk manager sizes each order in USDT "
        "within its limits, the engine commits a fraction of its equity.",
        file=out,
    )
    different = parity.rows.filter(pl.col("identical").is_not_null() & ~pl.col("identical"))
    for row in different.iter_rows(named=True):
        print(f"  differs: {row['symbol']} entry {row['entry_ts']:%m-%d %H:%M}: {row['note']}", file=out)
    ended = parity.rows.filter(pl.col("identical").is_null())
    if ended.height:
        print(
            f"  {ended.height} position(s) open at the end: the backtest sells them at the last close "
            "(end_of_data), the forward test keeps them open, marked to it.",
            file=out,
        )
