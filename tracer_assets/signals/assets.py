"""signals/signals (the newest signal per symbol and timeframe) and signals/signal_history
(append-only, so any past decision can be explained)."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import polars as pl

from tracer_assets.features.assets import INDICATORS_KEY, INDICATORS_TABLE, all_timeframes, read_with_warmup
from tracer_assets.features.indicators import INDICATOR_COLUMNS, compute_indicators
from tracer_assets.market.assets import check_result
from tracer_assets.market.timeframes import timeframe_seconds
from tracer_assets.metadata import markdown_table
from tracer_assets.policies import DUCKDB_POOL, loop_freshness
from tracer_assets.resources.warehouse import TracerDuckDB, ensure_table, transaction
from tracer_assets.settings import Settings
from tracer_assets.signals.guards import guard_outcome, lookahead_mismatches
from tracer_assets.signals.predictions import latest_predictions, read_signal_log
from tracer_assets.signals.scoring import VOLATILITY_LOOKBACK, score_history, score_latest

SIGNALS_KEY = dg.AssetKey(["signals", "signals"])
HISTORY_KEY = dg.AssetKey(["signals", "signal_history"])
SIGNALS_TABLE = "signals.signals"
HISTORY_TABLE = "signals.signal_history"
# Compared by the lookahead guard: what a decision reads.
GUARDED_COLUMNS = (*INDICATOR_COLUMNS, "direction", "signal_quality", "regime", "regime_confidence", "rule_label")
LOOKAHEAD_CUTS = (1, 25)  # bars before the newest, per symbol and timeframe
LOOKAHEAD_BARS = VOLATILITY_LOOKBACK + 100


def read_recent_indicators(connection, timeframes, bars: int) -> pl.DataFrame:
    """The newest `bars` indicator rows of every series, by time range (not a full scan)."""
    frames = []
    for timeframe in timeframes:
        frame = connection.sql(
            f"""SELECT * FROM {INDICATORS_TABLE}
                WHERE timeframe = ?
                  AND ts > (SELECT max(ts) FROM {INDICATORS_TABLE} WHERE timeframe = ?) - to_seconds(?::BIGINT)
                ORDER BY symbol, ts""",
            params=[timeframe, timeframe, bars * timeframe_seconds(timeframe)],
        ).pl()
        frames.append(frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC")))
    return pl.concat(frames, how="vertical_relaxed")


def signal_pipeline(candles: pl.DataFrame) -> pl.DataFrame:
    """Candles to per-bar scored signals: what the lookahead guard recomputes."""
    return score_history(compute_indicators(candles))


def build_signal_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    timeframes = all_timeframes(settings)

    # One step publishes the signals and appends them to the history: the history can neither
    # miss a publication nor record one twice, and a tick pays for one step, not two.
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                SIGNALS_KEY,
                deps=[INDICATORS_KEY],
                description=(
                    "One row per symbol and timeframe for the newest closed candle: signal_quality (0-10), "
                    "regime (Bull/Bear/Flat, volatile flag, confidence), conviction (0-10) and the ensemble "
                    "label over every prediction available (rules + external predictions). Definitions in "
                    "tracer_assets/signals/scoring.py."
                ),
                group_name="signals",
                kinds={"duckdb", "polars"},
                freshness_policy=loop_freshness(settings),
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
        log = read_signal_log(settings.signal_log)
        predictions = latest_predictions(log.records)
        if log.rejected:
            context.log.warning(f"{settings.signal_log}: {log.rejected} lines rejected ({dict(log.reasons)})")
        with duckdb.get_connection() as connection:
            recent = read_recent_indicators(connection, timeframes, VOLATILITY_LOOKBACK + 1)
            latest = score_latest(recent, predictions)
            appended = latest.with_columns(
                pl.lit(context.run.run_id).alias("run_id"),
                pl.lit(datetime.now(timezone.utc)).dt.cast_time_unit("us").alias("computed_at"),
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
            candles = read_with_warmup(connection, timeframes, newest, newest + timedelta(days=1), LOOKAHEAD_BARS)
        samples = _lookahead_samples(candles)
        mismatches = lookahead_mismatches(candles, signal_pipeline, samples, GUARDED_COLUMNS)
        table = latest.select("symbol", "timeframe", "ts", "signal_quality", "regime", "conviction", "ensemble_label")
        yield dg.MaterializeResult(
            asset_key=SIGNALS_KEY,
            metadata={
                "dagster/row_count": latest.height,
                "newest_candle": newest.isoformat() if newest else "none",
                "signals": dg.MetadataValue.md(markdown_table(table)),
                "external_predictions": len(predictions),
                "signal_log_rejected_lines": log.rejected,
            },
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
