"""market/candles and the SQL models, materialized for real: a DuckDB file, a Dagster
instance on disk, the replay exchange over the bundled Binance candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest
from conftest import bundled_frame, copy_replay_files
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from tracer_assets.definitions import MARKET_DATA_JOB, build_definitions
from tracer_assets.settings import SettingsError, load_settings

CANDLES = dg.AssetKey(["market", "candles"])
RESAMPLED = dg.AssetKey(["market", "candles_resampled"])
OHLCV = dg.AssetKey(["market", "ohlcv"])
PER_DAY_PER_SYMBOL = 288  # 5m candles in a day


def run_market_job(start: str, end: str | None = None, raise_on_error: bool = True, selection=None):
    defs = build_definitions(load_settings())
    job = defs.resolve_job_def(MARKET_DATA_JOB)
    with dg.DagsterInstance.get() as instance:
        return job.execute_in_process(
            instance=instance,
            tags={ASSET_PARTITION_RANGE_START_TAG: start, ASSET_PARTITION_RANGE_END_TAG: end or start},
            asset_selection=selection,
            raise_on_error=raise_on_error,
        )


def query(sql: str, params=None) -> list[tuple]:
    with duckdb.connect(str(load_settings().duckdb_path), read_only=True) as connection:
        return connection.execute(sql, params or []).fetchall()


def table_fingerprint(table: str = "market.candles") -> tuple:
    """Row count and a checksum over every value: equal fingerprints, equal tables."""
    return query(f"SELECT count(*), sum(hash(symbol, timeframe, ts, open, high, low, close, volume)) FROM {table}")[0]


def test_definitions_load_and_every_job_resolves(tracer_env):
    defs = build_definitions(load_settings())
    repository = defs.get_repository_def()
    keys = set(repository.asset_graph.get_all_asset_keys())
    assert {CANDLES, RESAMPLED, OHLCV} <= keys
    for job in defs.resolve_all_job_defs():
        assert job.name
    for sensor in defs.sensors or []:
        repository.get_sensor_def(sensor.name)
    for schedule in defs.schedules or []:
        repository.get_schedule_def(schedule.name)
    # Lineage comes from the SQL's ref() markers.
    assert repository.asset_graph.get(RESAMPLED).parent_keys == {CANDLES}
    assert repository.asset_graph.get(OHLCV).parent_keys == {CANDLES, RESAMPLED}
    partitions = repository.asset_graph.get(CANDLES).partitions_def
    keys = partitions.get_partition_keys()
    assert (keys[0], keys[-1]) == ("2024-01-01", "2024-09-06")  # the bundled data's days


def test_a_range_of_days_materializes_in_one_run(tracer_env):
    result = run_market_job("2024-03-13", "2024-03-15")
    assert result.success
    assert len(dg.DagsterInstance.get().get_runs()) == 1

    per_timeframe = dict(query("SELECT timeframe, count(*) FROM market.ohlcv GROUP BY 1"))
    assert per_timeframe == {"5m": 3 * 288 * 2, "15m": 3 * 96 * 2, "1h": 3 * 24 * 2, "4h": 3 * 6 * 2}
    # A fact of the real data: BTC/USDT's 2024 high of 73,777.00 came on 2024-03-14.
    high, when = query("SELECT max(high), arg_max(ts, high) FROM market.candles WHERE symbol = 'BTC/USDT'")[0]
    assert high == 73777.0 and when.date().isoformat() == "2024-03-14"
    assert query("SELECT count(*) FROM market.gaps") == [(0,)]

    materialization = result.asset_materializations_for_node("market__candles")[0]
    assert materialization.metadata["gaps_found"].value == 0
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        ("market/candles", "no_duplicate_keys"): True,
        ("market/candles", "monotonic_time"): True,
        ("market/candles", "sane_ohlc"): True,
        ("market/candles", "last_candle_not_stale"): True,
        ("market/candles", "all_symbols_fetched"): True,
        ("market/candles", "no_price_jump"): True,
        ("market/candles_resampled", "no_duplicate_keys"): True,
        ("market/candles_resampled", "monotonic_time"): True,
        ("market/candles_resampled", "sane_ohlc"): True,
    }


def test_rematerializing_a_day_replaces_exactly_that_day(tracer_env):
    assert run_market_job("2024-02-01", "2024-02-03").success
    before = table_fingerprint()
    before_resampled = table_fingerprint("market.candles_resampled")
    assert before[0] == 3 * PER_DAY_PER_SYMBOL * 2

    assert run_market_job("2024-02-02").success
    assert table_fingerprint() == before
    assert table_fingerprint("market.candles_resampled") == before_resampled


def _damage(rule: str):
    """A function breaking the BTC file at 2024-01-02 12:00 in the way `rule` forbids."""
    at = datetime(2024, 1, 2, 12, tzinfo=UTC)

    def edit(frame: pl.DataFrame) -> pl.DataFrame:
        row = frame.with_row_index().filter(pl.col("date") == at)["index"][0]
        is_row = pl.int_range(pl.len()) == row

        def set_value(column: str, value) -> pl.DataFrame:
            return frame.with_columns(pl.when(is_row).then(value).otherwise(pl.col(column)).alias(column))

        if rule == "missing_value":
            return set_value("close", float("nan"))
        if rule == "non_finite":
            return set_value("high", float("inf"))
        if rule == "non_positive_price":
            return set_value("low", 0.0)
        if rule == "high_below_low":
            return set_value("high", pl.col("low") - 1.0)
        if rule == "open_outside_range":
            return set_value("open", pl.col("high") * 1.01)
        if rule == "close_outside_range":
            return set_value("close", pl.col("low") * 0.99)
        if rule == "negative_volume":
            return set_value("volume", -1.0)
        if rule == "off_grid_timestamp":
            return set_value("date", pl.col("date") + timedelta(minutes=1))
        if rule == "duplicate_timestamp":
            return pl.concat([frame.slice(0, row + 1), frame.slice(row, None)])
        if rule == "out_of_order_timestamp":
            return pl.concat(
                [frame.slice(0, row), frame.slice(row + 1, 1), frame.slice(row, 1), frame.slice(row + 2, None)]
            )
        raise AssertionError(rule)

    return edit


@pytest.mark.parametrize(
    "rule",
    [
        "missing_value",
        "non_finite",
        "non_positive_price",
        "high_below_low",
        "open_outside_range",
        "close_outside_range",
        "negative_volume",
        "off_grid_timestamp",
        "duplicate_timestamp",
        "out_of_order_timestamp",
    ],
)
def test_a_bad_batch_is_rejected_by_name_and_the_table_keeps_what_it_had(rule, tracer_env, tmp_path, monkeypatch):
    clean = copy_replay_files(tmp_path / "clean", ["BTC/USDT", "ETH/USDT"])
    monkeypatch.setenv("TRACER_REPLAY_DIR", str(clean))
    assert run_market_job("2024-01-01", "2024-01-02").success
    before = table_fingerprint()
    before_resampled = table_fingerprint("market.candles_resampled")

    damaged = copy_replay_files(tmp_path / "damaged", ["ETH/USDT"])
    _damage(rule)(bundled_frame("BTC/USDT")).write_parquet(damaged / "BTC_USDT-5m.parquet")
    monkeypatch.setenv("TRACER_REPLAY_DIR", str(damaged))
    with pytest.raises(dg.Failure) as failure:
        run_market_job("2024-01-02")
    message = str(failure.value)
    assert f"[{rule}]" in message
    assert "BTC/USDT 5m at 2024-01-02T12:0" in message  # symbol, timeframe and the broken candle
    assert "nothing was written" in message
    assert table_fingerprint() == before
    assert table_fingerprint("market.candles_resampled") == before_resampled


def test_a_1000x_close_is_flagged_as_a_warning_and_does_not_stop_the_run(tracer_env, tmp_path, monkeypatch):
    replay = copy_replay_files(tmp_path / "bad_tick", ["ETH/USDT"])
    at = datetime(2024, 1, 2, 12, tzinfo=UTC)
    close = pl.when(pl.col("date") == at).then(pl.col("close") * 1000).otherwise(pl.col("close"))
    bad_tick = bundled_frame("BTC/USDT").with_columns(close=close, high=pl.max_horizontal("high", close))
    bad_tick.write_parquet(replay / "BTC_USDT-5m.parquet")
    monkeypatch.setenv("TRACER_REPLAY_DIR", str(replay))

    result = run_market_job("2024-01-01", "2024-01-02")
    assert result.success  # a warning: the candles and the resampled tables are written
    (jump,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_price_jump"]
    assert not jump.passed and jump.severity == dg.AssetCheckSeverity.WARN
    assert jump.asset_key == CANDLES
    assert jump.metadata["jumps"].value == 2  # the jump and the return after it
    examples = sorted(jump.metadata["examples"].value)
    assert examples[0].startswith("BTC/USDT 5m at 2024-01-02T12:00:00Z: close ") and "(x1000," in examples[0]
    assert examples[1].startswith("BTC/USDT 5m at 2024-01-02T12:05:00Z: close ")
    others = {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.check_name != "no_price_jump"}
    assert all(others.values()), others
    assert query("SELECT count(*) FROM market.candles_resampled WHERE symbol = 'BTC/USDT'")[0][0] > 0


def test_an_empty_replay_file_fails_the_code_location_naming_the_file_and_the_symbol(tracer_env, tmp_path, monkeypatch):
    replay = copy_replay_files(tmp_path / "empty", ["ETH/USDT"])
    bundled_frame("BTC/USDT").head(0).write_parquet(replay / "BTC_USDT-5m.parquet")
    monkeypatch.setenv("TRACER_REPLAY_DIR", str(replay))
    with pytest.raises(ValueError) as caught:
        build_definitions(load_settings())
    message = str(caught.value)
    assert str(replay / "BTC_USDT-5m.parquet") in message and "(BTC/USDT 5m)" in message
    assert "holds no candles" in message


def test_a_timeframe_that_is_not_a_multiple_of_the_base_is_refused_at_load(tracer_env, monkeypatch):
    monkeypatch.setenv("TRACER_TIMEFRAMES", "15m,7m")
    with pytest.raises(SettingsError, match="7m is not a whole multiple of the base timeframe 5m"):
        build_definitions(load_settings())


def test_resampled_hours_equal_binance_hourly_candles(tracer_env):
    """The bundled 5m candles rolled up to 1h equal Binance's own 1h candles, row for row."""
    assert run_market_job("2024-03-10", "2024-03-16").success
    ours = pl.DataFrame(
        query(
            """SELECT ts, open, high, low, close, volume FROM market.ohlcv
               WHERE symbol = 'BTC/USDT' AND timeframe = '1h' ORDER BY ts"""
        ),
        schema=["ts", "open", "high", "low", "close", "volume"],
        orient="row",
    )
    start, end = datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 17, tzinfo=UTC)
    binance = bundled_frame("BTC/USDT", "1h").filter(pl.col("date").is_between(start, end, closed="left"))
    assert ours.height == binance.height == 7 * 24
    assert ours["ts"].dt.epoch("ms").to_list() == binance["date"].dt.epoch("ms").to_list()
    for column in ("open", "high", "low", "close"):
        assert ours[column].to_list() == binance[column].to_list(), column
    relative = ((ours["volume"] - binance["volume"]).abs() / binance["volume"]).max()
    assert relative < 1e-9


def test_gaps_are_recorded_not_filled(tracer_env, tmp_path, monkeypatch):
    replay = copy_replay_files(tmp_path / "holes", ["ETH/USDT"])
    hole_start, hole_end = (
        datetime(2024, 1, 2, 10, tzinfo=UTC),
        datetime(2024, 1, 2, 11, 5, tzinfo=UTC),
    )
    btc = bundled_frame("BTC/USDT").filter(~pl.col("date").is_between(hole_start, hole_end, closed="left"))
    btc.write_parquet(replay / "BTC_USDT-5m.parquet")
    monkeypatch.setenv("TRACER_REPLAY_DIR", str(replay))
    result = run_market_job("2024-01-02")
    assert result.success
    gaps = query("SELECT symbol, timeframe, gap_start, gap_end, missing_candles FROM market.gaps")
    assert gaps == [("BTC/USDT", "5m", hole_start, hole_end, 13)]
    assert result.asset_materializations_for_node("market__candles")[0].metadata["gaps_found"].value == 1
    # The hour buckets the hole touches are incomplete, so they are not made up.
    hours = {row[0].hour for row in query("SELECT ts FROM market.ohlcv WHERE symbol = 'BTC/USDT' AND timeframe = '1h'")}
    assert hours == set(range(24)) - {10, 11}
    assert query("SELECT count(*) FROM market.candles WHERE symbol = 'BTC/USDT'") == [(288 - 13,)]


def test_replay_data_dir_may_be_a_freqtrade_folder(tracer_env, tmp_path, monkeypatch):
    """TRACER_REPLAY_DIR pointing at freqtrade's layout (.feather, .json) just works."""
    folder = tmp_path / "user_data" / "data" / "binance"
    folder.mkdir(parents=True)
    btc = bundled_frame("BTC/USDT").filter(pl.col("date") < datetime(2024, 1, 3, tzinfo=UTC))
    btc.write_ipc(folder / "BTC_USDT-5m.feather")
    eth = bundled_frame("ETH/USDT").filter(pl.col("date") < datetime(2024, 1, 3, tzinfo=UTC))
    rows = eth.select(pl.col("date").dt.epoch("ms"), "open", "high", "low", "close", "volume").rows()
    (folder / "ETH_USDT-5m.json").write_text(str([list(r) for r in rows]).replace("(", "[").replace(")", "]"))
    monkeypatch.setenv("TRACER_REPLAY_DIR", str(folder))
    assert run_market_job("2024-01-01", "2024-01-02").success
    assert dict(query("SELECT symbol, count(*) FROM market.candles GROUP BY 1")) == {"BTC/USDT": 576, "ETH/USDT": 576}
