"""The dbt-like SQL models: loading and refusing model files, rendering a partition window,
and the resampling SQL run in DuckDB against Binance's own hourly candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import tracer_assets
from tracer_assets.data import BUNDLED_REPLAY_DIR
from tracer_assets.market.candles import candles_from_rows
from tracer_assets.resources.replay_exchange import read_candle_file
from tracer_assets.sql.models import (
    SqlModelError,
    load_models,
    materialize_statements,
    render_model,
    template_variables,
)

UTC = UTC
MODELS_DIR = Path(tracer_assets.__file__).resolve().parents[1] / "dbt_like_sql"
VARIABLES = template_variables("5m", 300, [("15m", 900), ("1h", 3600), ("4h", 14400)])
START = datetime(2024, 3, 1, tzinfo=UTC)
END = START + timedelta(days=2)


def literal(moment: datetime) -> str:
    """A window bound as the SQL assets write it."""
    return f"'{moment.astimezone(UTC).isoformat()}'::TIMESTAMPTZ"


WINDOW = (literal(START), literal(END))


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, ...], object]:
    return {model.key: model for model in load_models(MODELS_DIR, VARIABLES)}


# --- the real models folder ----------------------------------------------------------------


def test_template_variables_render_the_resample_values():
    assert VARIABLES == {
        "base_timeframe": "5m",
        "base_seconds": 300,
        "resample_timeframes": "('15m', 900), ('1h', 3600), ('4h', 14400)",
    }


def test_real_models_folder_has_candles_resampled_and_ohlcv(models):
    assert set(models) == {("market", "candles_resampled"), ("market", "ohlcv")}

    resampled = models[("market", "candles_resampled")]
    assert resampled.table == "market.candles_resampled"
    assert resampled.materialized == "incremental"
    assert resampled.config == {"materialized": "incremental", "time_column": "ts"}
    assert resampled.refs == (("market", "candles"),)
    assert resampled.description.startswith("The base candles rolled up to every higher timeframe")
    assert resampled.path == MODELS_DIR / "market" / "candles_resampled.sql"

    ohlcv = models[("market", "ohlcv")]
    assert ohlcv.materialized == "view"
    assert ohlcv.refs == (("market", "candles"), ("market", "candles_resampled"))
    assert len(ohlcv.code_version) == 16 and ohlcv.code_version != resampled.code_version


def test_render_with_a_window_puts_the_window_literals_in(models):
    sql = render_model(models[("market", "candles_resampled")], VARIABLES, WINDOW)
    assert "ts >= '2024-03-01T00:00:00+00:00'::TIMESTAMPTZ AND ts < '2024-03-03T00:00:00+00:00'::TIMESTAMPTZ" in sql
    assert "FROM market.candles" in sql
    assert "VALUES ('15m', 900), ('1h', 3600), ('4h', 14400)" in sql
    assert "WHERE timeframe = '5m'" in sql
    assert "HAVING count(*) = f.seconds // 300" in sql
    assert "{{" not in sql and "config(" not in sql
    assert not sql.endswith(";")


def test_render_without_a_window_reads_everything(models):
    sql = render_model(models[("market", "candles_resampled")], VARIABLES)
    assert "ts >= '-infinity'::TIMESTAMPTZ AND ts < 'infinity'::TIMESTAMPTZ" in sql


def test_materialize_statements_per_kind(models):
    view = materialize_statements(models[("market", "ohlcv")], "SELECT 1")
    assert view == ["CREATE SCHEMA IF NOT EXISTS market", "CREATE OR REPLACE VIEW market.ohlcv AS\nSELECT 1"]
    incremental = materialize_statements(models[("market", "candles_resampled")], "SELECT 1")
    assert incremental[1] == "CREATE TABLE IF NOT EXISTS market.candles_resampled AS SELECT * FROM (SELECT 1) LIMIT 0"


# --- refused model files (each message names the file) --------------------------------------


def _model(folder: Path, relative: str, text: str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD = "{{ config(materialized='view') }}\nSELECT * FROM {{ ref('market/candles') }}\n"

BAD_MODELS = [
    (
        "ref_without_schema",
        "market/bad.sql",
        "SELECT * FROM {{ ref('candles') }}",
        "must name an asset as 'schema/table'",
    ),
    ("ref_too_deep", "market/bad.sql", "SELECT * FROM {{ ref('a/b/c') }}", "must name an asset as 'schema/table'"),
    (
        "ref_upper_case",
        "market/bad.sql",
        "SELECT * FROM {{ ref('Market/Candles') }}",
        "must name an asset as 'schema/table'",
    ),
    ("two_statements", "market/bad.sql", "SELECT 1;\nSELECT 2;", "one SELECT per file, found several statements"),
    (
        "unknown_config",
        "market/bad.sql",
        "{{ config(materialized='view', partition_by='ts') }}SELECT 1",
        "unknown config ['partition_by']",
    ),
    (
        "bad_materialization",
        "market/bad.sql",
        "{{ config(materialized='materialized_view') }}SELECT 1",
        "materialized must be one of",
    ),
    (
        "incremental_without_time_column",
        "market/bad.sql",
        "{{ config(materialized='incremental') }}SELECT * FROM {{ ref('market/candles') }}",
        "needs a ref() to partition like and a time_column",
    ),
    ("jinja_syntax_error", "market/bad.sql", "SELECT * FROM {{ ref('market/candles') ", "TemplateSyntaxError"),
    ("undefined_variable", "market/bad.sql", "SELECT {{ no_such_variable }}", "UndefinedError"),
    ("empty_file", "market/bad.sql", "{{ config(materialized='view') }}\n", "the file holds no SELECT"),
    ("at_top_level", "bad.sql", "SELECT 1", "a model lives at <schema>/<table>.sql"),
    ("too_deep", "market/daily/bad.sql", "SELECT 1", "a model lives at <schema>/<table>.sql"),
    ("not_snake_case", "market/Bad-Name.sql", "SELECT 1", "a model lives at <schema>/<table>.sql"),
    ("refs_itself", "market/bad.sql", "SELECT * FROM {{ ref('market/bad') }}", "a model cannot ref itself"),
]


@pytest.mark.parametrize(("relative", "text", "fragment"), [c[1:] for c in BAD_MODELS], ids=[c[0] for c in BAD_MODELS])
def test_bad_model_file_is_refused_naming_the_file(tmp_path, relative, text, fragment):
    _model(tmp_path, "market/fine.sql", GOOD)
    bad = _model(tmp_path, relative, text)
    with pytest.raises(SqlModelError) as caught:
        load_models(tmp_path, VARIABLES)
    message = str(caught.value)
    assert message.startswith(f"{bad}: ")
    assert fragment in message


def test_a_trailing_semicolon_and_dotted_ref_are_fine(tmp_path):
    _model(tmp_path, "research/daily_close.sql", "SELECT ts, close FROM {{ ref('market.candles') }};\n")
    (model,) = load_models(tmp_path, VARIABLES)
    assert model.key == ("research", "daily_close")
    assert model.refs == (("market", "candles"),)
    assert model.materialized == "view"
    assert render_model(model, VARIABLES) == "SELECT ts, close FROM market.candles"


def test_missing_models_folder_is_named(tmp_path):
    with pytest.raises(SqlModelError, match="does not exist") as caught:
        load_models(tmp_path / "nowhere", VARIABLES)
    assert str(tmp_path / "nowhere") in str(caught.value)


# --- the resampling SQL in DuckDB against Binance's own 1h candles -------------------------


@pytest.fixture(scope="module")
def btc_5m() -> pl.DataFrame:
    """Two days of real BTC/USDT 5m candles in the stored shape."""
    raw = read_candle_file(BUNDLED_REPLAY_DIR / "BTC_USDT-5m.parquet")
    rows = raw.filter(
        pl.col("ms").is_between(int(START.timestamp() * 1000), int(END.timestamp() * 1000), closed="left")
    ).rows()
    candles = candles_from_rows([list(r) for r in rows], "BTC/USDT", "5m")
    assert candles.height == 576
    return candles


@pytest.fixture(scope="module")
def binance_1h() -> pl.DataFrame:
    raw = pl.read_parquet(BUNDLED_REPLAY_DIR / "BTC_USDT-1h.parquet")
    return raw.filter(pl.col("date").is_between(START, END, closed="left")).select(
        pl.lit("BTC/USDT").alias("symbol"),
        pl.lit("1h").alias("timeframe"),
        pl.col("date").cast(pl.Datetime("us", "UTC")).alias("ts"),
        "open",
        "high",
        "low",
        "close",
        "volume",
    )


def _candles_db(candles: pl.DataFrame, timezone_setting: str = "UTC") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB holding `candles` as market.candles."""
    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{timezone_setting}'")
    con.execute("CREATE SCHEMA market")
    con.register("incoming", candles.to_arrow())
    con.execute("CREATE TABLE market.candles AS SELECT * FROM incoming")
    return con


def _resample(models, candles: pl.DataFrame, timezone_setting: str = "UTC") -> pl.DataFrame:
    con = _candles_db(candles, timezone_setting)
    try:
        sql = render_model(models[("market", "candles_resampled")], VARIABLES, WINDOW)
        out = con.sql(sql).pl()
    finally:
        con.close()
    return out.with_columns(pl.col("ts").dt.convert_time_zone("UTC")).sort("timeframe", "ts")


def _compare_ohlcv(ours: pl.DataFrame, theirs: pl.DataFrame) -> None:
    assert_frame_equal(ours.drop("volume"), theirs.drop("volume"), check_exact=True)
    assert_frame_equal(ours.select("volume"), theirs.select("volume"), check_exact=False, rel_tol=1e-9, abs_tol=0.0)


def test_resampled_1h_equals_binances_own_1h_candles(models, btc_5m, binance_1h):
    out = _resample(models, btc_5m)
    assert out.schema == pl.Schema(
        {
            "symbol": pl.String,
            "timeframe": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            **{c: pl.Float64 for c in ("open", "high", "low", "close", "volume")},
        }
    )
    assert out.group_by("timeframe").len().sort("timeframe").rows() == [("15m", 192), ("1h", 48), ("4h", 12)]
    assert binance_1h.height == 48
    _compare_ohlcv(out.filter(pl.col("timeframe") == "1h").sort("ts"), binance_1h)


def test_resampled_4h_and_15m_roll_up_the_real_candles(models, btc_5m, binance_1h):
    out = _resample(models, btc_5m)
    # 4h from Binance's own hourly candles, rolled up by polars
    four_hours = (
        binance_1h.sort("ts")
        .group_by_dynamic("ts", every="4h")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
        )
        .select(
            pl.lit("BTC/USDT").alias("symbol"),
            pl.lit("4h").alias("timeframe"),
            "ts",
            "open",
            "high",
            "low",
            "close",
            "volume",
        )
    )
    _compare_ohlcv(out.filter(pl.col("timeframe") == "4h").sort("ts"), four_hours)

    fifteen = out.filter(pl.col("timeframe") == "15m").sort("ts")
    first = btc_5m.head(3)
    assert fifteen.row(0, named=True) | {"volume": None} == {
        "symbol": "BTC/USDT",
        "timeframe": "15m",
        "ts": START,
        "open": first["open"][0],
        "high": first["high"].max(),
        "low": first["low"].min(),
        "close": first["close"][2],
        "volume": None,
    }
    assert fifteen["volume"][0] == pytest.approx(first["volume"].sum(), rel=1e-12)


def test_buckets_stay_utc_aligned_whatever_the_session_time_zone(models, btc_5m):
    assert_frame_equal(_resample(models, btc_5m, "America/New_York"), _resample(models, btc_5m, "UTC"))


def test_a_bucket_with_a_missing_5m_candle_is_not_emitted(models, btc_5m, binance_1h):
    hole = datetime(2024, 3, 1, 10, 25, tzinfo=UTC)
    assert (btc_5m["ts"] == hole).sum() == 1
    out = _resample(models, btc_5m.filter(pl.col("ts") != hole))

    assert out.group_by("timeframe").len().sort("timeframe").rows() == [("15m", 191), ("1h", 47), ("4h", 11)]
    emitted = set(out.select("timeframe", "ts").rows())
    assert ("15m", datetime(2024, 3, 1, 10, 15, tzinfo=UTC)) not in emitted
    assert ("1h", datetime(2024, 3, 1, 10, tzinfo=UTC)) not in emitted
    assert ("4h", datetime(2024, 3, 1, 8, tzinfo=UTC)) not in emitted
    # the neighbours are whole and still exactly Binance's
    assert ("15m", datetime(2024, 3, 1, 10, 30, tzinfo=UTC)) in emitted
    _compare_ohlcv(
        out.filter(pl.col("timeframe") == "1h").sort("ts"),
        binance_1h.filter(pl.col("ts") != datetime(2024, 3, 1, 10, tzinfo=UTC)),
    )


def test_the_window_limits_what_is_read(models, btc_5m):
    con = _candles_db(btc_5m)
    day_two = (literal(START + timedelta(days=1)), literal(END))
    out = con.sql(render_model(models[("market", "candles_resampled")], VARIABLES, day_two)).pl()
    con.close()
    assert out.filter(pl.col("timeframe") == "1h")["ts"].min() == START + timedelta(days=1)
    assert out.height == 126  # one day: 96 + 24 + 6


def test_ohlcv_view_unions_base_and_resampled(models, btc_5m):
    con = _candles_db(btc_5m)
    resampled = models[("market", "candles_resampled")]
    for statement in materialize_statements(resampled, render_model(resampled, VARIABLES, WINDOW)):
        con.execute(statement)
    con.execute(f"INSERT INTO market.candles_resampled {render_model(resampled, VARIABLES, WINDOW)}")
    ohlcv = models[("market", "ohlcv")]
    for statement in materialize_statements(ohlcv, render_model(ohlcv, VARIABLES)):
        con.execute(statement)
    counts = con.sql("SELECT timeframe, count(*) FROM market.ohlcv GROUP BY ALL ORDER BY min(ts), 1").fetchall()
    con.close()
    assert sorted(counts) == [("15m", 192), ("1h", 48), ("4h", 12), ("5m", 576)]


def test_whole_2024_btc_5m_resampled_equals_binances_1h_file_in_shared(models):
    """Binance's own 1h file, from ../shared (optional): every row of the whole range."""
    from conftest import SHARED_DATA

    folder = SHARED_DATA / "binance_spot_2024"
    if not (folder / "BTC_USDT-5m.feather").is_file():
        pytest.skip(
            f"optional real data not present: {folder} (../shared/data beside the checkout, or TRACER_SHARED_DATA)"
        )
    raw = read_candle_file(folder / "BTC_USDT-5m.feather")
    candles = candles_from_rows([list(r) for r in raw.rows()], "BTC/USDT", "5m")
    con = _candles_db(candles)
    try:
        sql = render_model(models[("market", "candles_resampled")], VARIABLES)
        ours = con.sql(f"SELECT * FROM ({sql}) WHERE timeframe = '1h' ORDER BY ts").pl()
    finally:
        con.close()
    theirs = pl.read_ipc(folder / "BTC_USDT-1h.feather").select(
        pl.lit("BTC/USDT").alias("symbol"),
        pl.lit("1h").alias("timeframe"),
        pl.col("date").cast(pl.Datetime("us", "UTC")).alias("ts"),
        "open",
        "high",
        "low",
        "close",
        "volume",
    )
    assert ours.height == theirs.height == 5980
    _compare_ohlcv(ours.with_columns(pl.col("ts").dt.convert_time_zone("UTC")), theirs)
