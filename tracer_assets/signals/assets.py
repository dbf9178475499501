"""signals/signals (the newest signal per symbol and timeframe) and signals/signal_history
(append-only, so any past decision can be explained).

A symbol is published only when every one of its timeframes has the history a valid signal
needs (SIGNAL_HISTORY_BARS candles, see scoring.py); the others are withheld and named. When
no symbol has it (a new instance, one day of candles), the step fails before writing anything,
with the bars needed and the command that backfills them: a signal computed on too short a
history is never published, and an empty publication would still wake the decision job.
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb as duckdb_module
import polars as pl
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracer_assets.checks import check_result
from tracer_assets.features.indicators import INDICATOR_COLUMNS, WARMUP_BARS, compute_indicators
from tracer_assets.features.keys import INDICATORS_KEY
from tracer_assets.features.store import read_recent_indicators, read_with_warmup
from tracer_assets.guards import guard_outcome, lookahead_mismatches
from tracer_assets.market.partitions import candle_partitions
from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.metadata import markdown_table
from tracer_assets.ml.keys import PREDICTIONS_KEY, PREDICTIONS_TABLE
from tracer_assets.ml.predict import ml_votes
from tracer_assets.policies import DUCKDB_POOL, loop_freshness
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.schedules import TICK_JOB
from tracer_assets.settings import Settings
from tracer_assets.signals.keys import HISTORY_KEY, HISTORY_TABLE, SIGNALS_KEY, SIGNALS_TABLE
from tracer_assets.signals.predictions import read_signal_log, select_predictions
from tracer_assets.signals.scoring import (
    SIGNAL_COLUMNS,
    SIGNAL_HISTORY_BARS,
    VOLATILITY_LOOKBACK,
    HistoryShortfall,
    history_shortfalls,
    not_converged,
    score_history,
    score_latest,
    with_predictions,
)
from tracer_assets.tables import ensure_table, transaction
from tracer_assets.ui_tables import COLUMN_SCHEMA, column_schema

# signals.signals, every column (SIGNAL_COLUMNS): name, DuckDB type, description (scoring.py defines them).
SIGNALS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("symbol", "VARCHAR", "Spot symbol, e.g. BTC/USDT"),
    ("timeframe", "VARCHAR", "Candle timeframe"),
    ("ts", "TIMESTAMP WITH TIME ZONE", "Open time of the newest closed candle, the one scored (UTC)"),
    ("close", "DOUBLE", "That candle's close"),
    ("direction", "INTEGER", "Sign of the trend vote: 1 up, -1 down, 0 tied"),
    ("signal_quality", "DOUBLE", "0-10: how clean a move in that direction is"),
    ("regime", "VARCHAR", "Bull, Bear or Flat"),
    ("regime_volatile", "BOOLEAN", "Realized volatility above 1.5 x its 500-bar median"),
    ("regime_confidence", "DOUBLE", "Confidence in the regime, 0-1"),
    ("conviction", "DOUBLE", "0-10: quality, regime agreement, calm and the other timeframes' confirmation"),
    ("rule_label", "VARCHAR", "The rules' label: strong_bull, bull, other, bear or strong_bear"),
    ("ensemble_label", "VARCHAR", "The weighted vote of every prediction (rules, models, external)"),
    ("ensemble_confidence", "DOUBLE", "Weight of the predictions agreeing with the label, over all the weight"),
    ("predictions_used", "BIGINT", "Predictions in the vote"),
    ("ml_label", "VARCHAR", "The models' ensemble's label, when one was usable"),
    ("ml_confidence", "DOUBLE", "Its confidence"),
)

# Compared by the lookahead guard: what a decision reads.
GUARDED_COLUMNS = (*INDICATOR_COLUMNS, "direction", "signal_quality", "regime", "regime_confidence", "rule_label")
LOOKAHEAD_CUTS = (1, 25)  # bars before the newest, per symbol and timeframe
LOOKAHEAD_BARS = VOLATILITY_LOOKBACK + 100


def read_history_bars(
    connection, timeframes, symbols: Sequence[str], window_bars: int = WARMUP_BARS
) -> tuple[dict[tuple[str, str], int], dict[str, datetime]]:
    """Candles per (symbol, timeframe) in the `window_bars` candles of time up to the timeframe's
    newest candle (the window the indicators read), and that newest candle per timeframe.

    Bounded by the window, not by the stored history; a series with no candle there is absent.
    """
    bars: dict[tuple[str, str], int] = {}
    newest: dict[str, datetime] = {}
    for timeframe in timeframes:
        try:
            rows = connection.execute(
                """WITH newest AS (
                       SELECT max(ts) AS ts FROM market.ohlcv WHERE timeframe = ? AND list_contains(?, symbol)
                   )
                   SELECT c.symbol, count(*), any_value(newest.ts) FROM market.ohlcv AS c, newest
                   WHERE c.timeframe = ? AND list_contains(?, c.symbol)
                     AND c.ts <= newest.ts AND c.ts > newest.ts - to_seconds(?::BIGINT)
                   GROUP BY c.symbol""",
                [timeframe, list(symbols), timeframe, list(symbols), window_bars * timeframe_seconds(timeframe)],
            ).fetchall()
        except duckdb_module.CatalogException as error:
            raise dg.Failure(
                "market.ohlcv does not exist in this DuckDB file: materialize market/ohlcv "
                "(`dagster asset materialize --select market/ohlcv -m tracer_assets.definitions`, or `make demo`)"
            ) from error
        for symbol, count, newest_ts in rows:
            bars[(symbol, timeframe)] = int(count)
            newest[timeframe] = newest_ts.astimezone(UTC)
    return bars, newest


def history_message(
    shortfalls: Sequence[HistoryShortfall],
    newest: dict[str, datetime],
    *,
    published: Sequence[str] = (),
    first_day: str | None = None,
) -> str:
    """What is short, what a valid signal needs, what was done about it, and the backfill command."""
    by_symbol: dict[str, list[str]] = {}
    for shortfall in shortfalls:
        by_symbol.setdefault(shortfall.symbol, []).append(f"{shortfall.timeframe} {shortfall.reason}")
    short = "; ".join(f"{symbol} {', '.join(parts)}" for symbol, parts in by_symbol.items())
    needed = max((s.needed for s in shortfalls), default=SIGNAL_HISTORY_BARS)
    lines = [
        "Not enough candle history for a valid signal: "
        "every indicator a signal reads (EMA 200 is the last to appear) must "
        f"exist at its candle, which takes {needed} candles of each symbol and timeframe up to it "
        f"(the indicators converge fully after {WARMUP_BARS:,}). Short: {short}.",
    ]
    if published:
        lines.append(
            f"Withheld (no signal published, their decisions HOLD): {', '.join(by_symbol)}. "
            f"Published: {', '.join(published)}."
        )
    else:
        lines.append("No signal was published: signals.signals and signals.signal_history are unchanged.")
    if not newest:
        lines.append(
            "market.ohlcv holds no candles of these symbols: run the trading tick over a range of days first "
            f"(`dagster job execute -m tracer_assets.definitions -j {TICK_JOB} --tags "
            f'\'{{"{ASSET_PARTITION_RANGE_START_TAG}": "<first day>", '
            f'"{ASSET_PARTITION_RANGE_END_TAG}": "<today>"}}\'`).'
        )
        return "\n".join(lines)
    end = max(newest.values())
    spans = {s.timeframe: (s.needed - 1) * timedelta(seconds=timeframe_seconds(s.timeframe)) for s in shortfalls}
    start = min(newest.get(timeframe, end) - span for timeframe, span in spans.items())
    range_start, range_end = f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}"
    if first_day is not None and range_start < first_day:
        # The partitions (the exchange's candles) begin later than that history would have to.
        earliest = datetime.strptime(first_day, "%Y-%m-%d").replace(tzinfo=UTC) + max(spans.values())
        range_start, range_end = first_day, max(range_end, f"{earliest:%Y-%m-%d}")
        lines.append(
            f"The candles begin on {first_day}: {end:%Y-%m-%d} cannot have that history; the first day that can "
            f"is {earliest:%Y-%m-%d}."
        )
    tags = json.dumps({ASSET_PARTITION_RANGE_START_TAG: range_start, ASSET_PARTITION_RANGE_END_TAG: range_end})
    lines.append(
        f"Backfill the candles, resampled candles and indicators from {range_start} to {range_end} in one run of "
        f"the tick, which then publishes the signals:\n"
        f"  dagster job execute -m tracer_assets.definitions -j {TICK_JOB} --tags '{tags}'"
    )
    return "\n".join(lines)


def first_candle_day(settings: Settings) -> str | None:
    """The first daily partition of the candles ("2024-01-01"), None if it cannot be told."""
    try:
        start = candle_partitions(settings).start
    except Exception:  # only for a message: never let it hide the real problem
        return None
    return f"{start:%Y-%m-%d}"


def signal_pipeline(candles: pl.DataFrame) -> pl.DataFrame:
    """Candles to per-bar scored signals: what the lookahead guard recomputes."""
    return score_history(compute_indicators(candles))


def build_signal_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    timeframes = settings.market.all_timeframes
    symbols = list(settings.market.symbols)

    # One step publishes the signals and appends them to the history: the history can neither
    # miss a publication nor record one twice, and a tick pays for one step, not two.
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                SIGNALS_KEY,
                deps=[INDICATORS_KEY, PREDICTIONS_KEY],
                description=(
                    "One row per symbol and timeframe for the newest closed candle: signal_quality (0-10), "
                    "regime (Bull/Bear/Flat, volatile flag, confidence), conviction (0-10) and the ensemble "
                    "label over every prediction available (rules, the models' ensemble unless its models are too "
                    "old, external predictions; none dated after its candle). A symbol short of the history a valid "
                    "signal needs is withheld; with none to publish the step fails, naming the backfill. "
                    "Definitions in tracer_assets/signals/scoring.py."
                ),
                group_name="signals",
                kinds={"duckdb", "polars"},
                freshness_policy=loop_freshness(settings),
                metadata={COLUMN_SCHEMA: column_schema(SIGNALS_COLUMNS)},
            ),
            dg.AssetSpec(
                HISTORY_KEY,
                deps=[SIGNALS_KEY],
                description=(
                    "Every signal ever published, appended with the run that computed it (in the same step "
                    "that publishes it): never updated or deleted."
                ),
                group_name="signals",
                kinds={"duckdb"},
            ),
        ],
        name="signals",
        pool=DUCKDB_POOL,
        check_specs=[
            dg.AssetCheckSpec(
                "no_lookahead",
                asset=SIGNALS_KEY,
                blocking=True,
                description=(
                    "Past signals recomputed from the candles up to their own candle only are identical "
                    "(freqtrade's lookahead analysis), for every symbol and timeframe at "
                    f"{', '.join(str(n) for n in LOOKAHEAD_CUTS)} bars before the newest."
                ),
            )
        ],
    )
    def signals(context: dg.AssetExecutionContext, duckdb: TracerDuckDB):
        log = read_signal_log(settings.signals.signal_log)
        if log.error:  # a directory, a FIFO, no permission: reported, never blocking
            context.log.warning(f"TRACER_SIGNAL_LOG {log.path}: {log.error}; no external predictions this run")
        if log.rejected:
            context.log.warning(f"{settings.signals.signal_log}: {log.rejected} lines rejected ({dict(log.reasons)})")
        if log.records_dropped:
            context.log.warning(
                f"{settings.signals.signal_log}: only the newest {len(log.records)} records kept, "
                f"{log.records_dropped} older ones dropped"
            )
        with duckdb.get_connection() as connection:
            recent = read_recent_indicators(connection, timeframes, VOLATILITY_LOOKBACK + 1, symbols)
            scored = score_latest(recent)
            bars, newest_candles = read_history_bars(connection, timeframes, symbols)
            shortfalls = history_shortfalls(bars, scored.select("symbol", "timeframe").rows(), symbols, timeframes)
            withheld = list(dict.fromkeys(shortfall.symbol for shortfall in shortfalls))
            kept = [symbol for symbol in symbols if symbol not in withheld]
            if not kept:  # before any write: the tables keep what they had
                raise dg.Failure(
                    description=history_message(shortfalls, newest_candles, first_day=first_candle_day(settings)),
                    metadata={"history_needed_bars": SIGNAL_HISTORY_BARS, "short_series": [str(s) for s in shortfalls]},
                )
            if withheld:
                context.log.warning(
                    history_message(shortfalls, newest_candles, published=kept, first_day=first_candle_day(settings))
                )
            scored = scored.filter(pl.col("symbol").is_in(kept))
            newest_by_series = {(s, tf): ts for s, tf, ts in scored.select("symbol", "timeframe", "ts").rows()}
            chosen = select_predictions(log.records, newest_by_series, [(s, tf) for s in symbols for tf in timeframes])
            if chosen.rejected_future or chosen.rejected_unconfigured:
                context.log.warning(
                    f"{settings.signals.signal_log}: {chosen.rejected_future} predictions dated after their newest "
                    "candle and "
                    f"{chosen.rejected_unconfigured} for unconfigured symbols or timeframes rejected "
                    f"(e.g. {'; '.join(chosen.examples[:3])})"
                )
            votes, ml_reasons = ml_votes(
                connection,
                PREDICTIONS_TABLE,
                newest_by_series,
                settings.ml.timeframes,
                datetime.now(UTC),
                settings.ml.model_max_age_hours,
            )
            unexplained = {key: r for key, r in ml_reasons.items() if key[1] in settings.ml.timeframes}
            if unexplained:
                by_reason: dict[str, list[str]] = {}
                for (symbol, timeframe), reason in unexplained.items():
                    by_reason.setdefault(reason, []).append(f"{symbol} {timeframe}")
                context.log.warning(
                    "no ML vote for "
                    + "; ".join(f"{', '.join(series)}: {reason}" for reason, series in by_reason.items())
                )
            latest = with_predictions(scored, chosen.used, votes, settings.ml.vote_weight).select(SIGNAL_COLUMNS)
            appended = latest.with_columns(
                pl.lit(context.run.run_id).alias("run_id"),
                pl.lit(datetime.now(UTC)).dt.cast_time_unit("us").alias("computed_at"),
            )
            ensure_table(connection, SIGNALS_TABLE, latest)
            ensure_table(connection, HISTORY_TABLE, appended)
            with transaction(connection):
                connection.execute(f"DELETE FROM {SIGNALS_TABLE}")
                connection.register("latest_signals", latest.to_arrow())
                connection.execute(f"INSERT INTO {SIGNALS_TABLE} BY NAME SELECT * FROM latest_signals")
                connection.register("appended_signals", appended.to_arrow())
                connection.execute(f"INSERT INTO {HISTORY_TABLE} BY NAME SELECT * FROM appended_signals")
            history_rows = connection.execute(f"SELECT count(*) FROM {HISTORY_TABLE}").fetchall()[0][0]
            newest = latest["ts"].max()
            # Full and cut histories start at the same bar, so they need no convergence, only
            # enough bars for every column to exist (EMA 200, the 500-bar volatility median).
            candles = read_with_warmup(connection, timeframes, newest, newest + timedelta(days=1), LOOKAHEAD_BARS, kept)
        samples = _lookahead_samples(candles)
        mismatches = lookahead_mismatches(candles, signal_pipeline, samples, GUARDED_COLUMNS)
        table = latest.select(
            "symbol", "timeframe", "ts", "signal_quality", "regime", "conviction", "ml_label", "ensemble_label"
        )
        published_bars = {key: count for key, count in bars.items() if key[0] in kept}
        metadata = {
            "dagster/row_count": latest.height,
            "newest_candle": newest.isoformat() if newest else "none",
            "signals": dg.MetadataValue.md(markdown_table(table)),
            "withheld_symbols": withheld,
            "history_needed_bars": SIGNAL_HISTORY_BARS,
            "history_bars_min": min(published_bars.values(), default=0),
            # Valid, but the indicators still depend on where the stored history starts.
            "series_below_full_warmup": len(not_converged(published_bars)),
            "predictors": {
                "rules": latest.height,
                "ml": len(votes),
                "external": len(chosen.used),
            },
            "ml_votes": len(votes),
            "ml_not_used": {f"{symbol} {timeframe}": reason for (symbol, timeframe), reason in ml_reasons.items()},
            "external_predictions": len(chosen.used),
            "external_predictions_rejected_future": chosen.rejected_future,
            "external_predictions_rejected_unconfigured": chosen.rejected_unconfigured,
            "external_predictions_rejected_no_signal": chosen.rejected_no_signal,
            "external_predictions_ignored_stale": chosen.ignored_stale,
            "external_predictions_superseded": chosen.superseded,
            "signal_log_rejected_lines": log.rejected,
            "signal_log_records_dropped": log.records_dropped,
            "signal_log_warning": log.error or "",
        }
        yield dg.MaterializeResult(
            asset_key=SIGNALS_KEY,
            metadata=metadata,
            check_results=[check_result(guard_outcome("no_lookahead", mismatches, samples=len(samples)), SIGNALS_KEY)],
        )
        yield dg.MaterializeResult(
            asset_key=HISTORY_KEY, metadata={"appended": appended.height, "dagster/row_count": history_rows}
        )

    return [signals]


def _lookahead_samples(candles: pl.DataFrame) -> list[tuple]:
    """(symbol, timeframe, ts) of the candles LOOKAHEAD_CUTS bars before each series' newest."""
    bars_back = pl.col("ts").rank("ordinal", descending=True).over("symbol", "timeframe") - 1
    picked = candles.select("symbol", "timeframe", "ts").filter(bars_back.is_in(list(LOOKAHEAD_CUTS)))
    return picked.sort("symbol", "timeframe", "ts").rows()
