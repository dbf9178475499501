"""Frames as Dagster table metadata (tracer_assets/ui_tables.py): DuckDB's type names, exact
Decimals, blanks kept blank, nothing the UI's JSON cannot read; research/backtests' best out-of-sample
table; every main table declares a described column schema."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import dagster as dg
import duckdb
import polars as pl
import pytest
from conftest import write_ohlcv
from dagster._serdes import deserialize_value, serialize_value

from tracer_assets.definitions import build_definitions
from tracer_assets.market.keys import CANDLES_KEY, OHLCV_KEY
from tracer_assets.ml.keys import MODELS_KEY
from tracer_assets.research.assets import build_research_assets
from tracer_assets.research.keys import BACKTESTS_KEY, BACKTESTS_TABLE
from tracer_assets.resources.step_values import StepValuesIOManager
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import load_settings
from tracer_assets.signals.keys import SIGNALS_KEY
from tracer_assets.trading.keys import ORDERS_KEY, PORTFOLIO_KEY, POSITIONS_KEY
from tracer_assets.ui_tables import COLUMN_SCHEMA, cell, exact_decimal, frame_table, sql_type


def test_polars_types_are_named_as_duckdb_describes_them():
    with duckdb.connect() as connection:
        relation = connection.sql(
            "SELECT 'x' AS s, 1::INTEGER AS i, 1::BIGINT AS b, 1.5::DOUBLE AS f, true AS t, "
            "0.1::DECIMAL(38,18) AS d, now() AS tz, now()::TIMESTAMP AS naive, DATE '2024-01-01' AS day, "
            "[1, 2] AS l"
        )
        frame = relation.pl()
        described = [(row[0], row[1]) for row in connection.execute(f"DESCRIBE {relation.sql_query()}").fetchall()]
    assert [(name, sql_type(dtype)) for name, dtype in frame.schema.items()] == described


def test_a_frame_becomes_a_typed_described_table_with_exact_money_and_blanks_kept():
    frame = pl.DataFrame(
        {
            "symbol": ["BTC/USDT", None],
            "amount": pl.Series([Decimal("0.000123456789012345"), None], dtype=pl.Decimal(38, 18)),
            "equity": pl.Series(
                [Decimal("12345678901234567890.123456789012345678"), Decimal("10")], dtype=pl.Decimal(38, 18)
            ),
            "ts": [datetime(2024, 9, 5, 14, 0, tzinfo=timezone(timedelta(hours=2))), None],
            "score": [0.25, float("nan")],
            "trades": [3, None],
            "open": [True, None],
        }
    )
    table = frame_table(frame, {"amount": "Base units", "equity": "Quote"})
    assert isinstance(table, dg.TableMetadataValue)
    columns = [(c.name, c.type, c.description) for c in table.schema.columns]
    assert columns == [
        ("symbol", "VARCHAR", None),
        ("amount", "DECIMAL(38,18)", "Base units"),
        ("equity", "DECIMAL(38,18)", "Quote"),
        ("ts", "TIMESTAMP WITH TIME ZONE", None),
        ("score", "DOUBLE", None),
        ("trades", "BIGINT", None),
        ("open", "BOOLEAN", None),
    ]
    first, second = (dict(record.data) for record in table.records)
    # 38 digits, exactly: a float would keep 17 of them.
    assert first == {
        "symbol": "BTC/USDT",
        "amount": "0.000123456789012345",
        "equity": "12345678901234567890.123456789012345678",
        "ts": "2024-09-05T12:00:00+00:00",
        "score": 0.25,
        "trades": 3,
        "open": True,
    }
    assert second == {
        "symbol": None,
        "amount": None,
        "equity": "10",
        "ts": None,
        "score": None,
        "trades": None,
        "open": None,
    }
    # What the instance stores and the UI parses (strict JSON: a NaN would not be read).
    assert deserialize_value(serialize_value(table), dg.TableMetadataValue) == table
    for record in table.records:
        json.loads(json.dumps(dict(record.data), allow_nan=False))


def test_an_empty_frame_keeps_its_schema_and_floats_can_be_rounded_for_display_saying_so():
    empty = frame_table(pl.DataFrame(schema={"symbol": pl.String, "pnl": pl.Decimal(38, 18)}))
    assert empty.records == [] and [c.type for c in empty.schema.columns] == ["VARCHAR", "DECIMAL(38,18)"]
    frame = pl.DataFrame(
        {"sharpe": [1.234567], "rate": [0.5], "pnl": pl.Series([Decimal("1.234567")], dtype=pl.Decimal(38, 18))}
    )
    table = frame_table(frame, {"sharpe": "Sharpe ratio"}, float_places=2)
    assert dict(table.records[0].data) == {"sharpe": 1.23, "rate": 0.5, "pnl": "1.234567"}
    descriptions = {c.name: c.description for c in table.schema.columns}
    assert descriptions == {
        "sharpe": "Sharpe ratio (rounded to 2 places here)",
        "rate": "Rounded to 2 places here",
        "pnl": None,
    }


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("0.500000000000000000"), "0.5"),
        (Decimal("10.000"), "10"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1E-18"), "0.000000000000000001"),
        (Decimal("-0.000"), "0"),
        (Decimal("-2.50"), "-2.5"),
        (Decimal("NaN"), None),
        (Decimal("Infinity"), None),
    ],
)
def test_a_decimal_is_shown_exactly_without_exponent_or_trailing_zeros(value, shown):
    assert exact_decimal(value) == shown


def test_cells_are_what_a_table_record_holds():
    assert cell(float("inf")) is None and cell(-0.5) == -0.5
    assert cell(datetime(2024, 1, 1, 12, tzinfo=UTC)) == "2024-01-01T12:00:00+00:00"
    assert cell(datetime(2024, 1, 1, 12)) == "2024-01-01T12:00:00"
    assert cell(date(2024, 1, 1)) == "2024-01-01"
    assert cell(timedelta(minutes=5)) == "0:05:00"
    assert cell([1, "a"]) == '[1, "a"]'
    assert cell(False) is False and cell(7) == 7 and cell("x") == "x"


def test_every_main_table_declares_a_described_column_schema(tracer_env):
    defs = build_definitions(load_settings())
    for key in (CANDLES_KEY, SIGNALS_KEY, BACKTESTS_KEY, MODELS_KEY, ORDERS_KEY, POSITIONS_KEY, PORTFOLIO_KEY):
        schema = defs.resolve_assets_def(key).specs_by_key[key].metadata[COLUMN_SCHEMA]
        assert isinstance(schema, dg.TableSchema) and schema.columns, key
        assert all(column.type and column.description for column in schema.columns), key


def test_the_backtests_best_out_of_sample_table_has_win_rate_drawdown_and_sharpe(tmp_path):
    database = str(tmp_path / "tracer.duckdb")
    write_ohlcv(database)
    settings = load_settings({"TRACER_SYMBOLS": "BTC/USDT", "MACRO_BACKTEST_JSON_PATH": str(tmp_path / "bt.json")})
    assets = build_research_assets(settings)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [*assets, dg.AssetSpec(OHLCV_KEY)],
            resources={
                "duckdb": TracerDuckDB(database=database),
                "step_values": StepValuesIOManager(base_dir=str(tmp_path / "step_values")),
            },
            instance=instance,
        )
        assert result.success
        record = instance.fetch_materializations(BACKTESTS_KEY, limit=1).records[0]
    table = record.asset_materialization.metadata["best_out_of_sample"]
    assert isinstance(table, dg.TableMetadataValue)
    columns = {c.name: (c.type, c.description) for c in table.schema.columns}
    assert list(columns) == [
        "name", "symbol", "timeframe", "score", "total_return", "sharpe", "win_rate", "max_drawdown", "trades"
    ]  # fmt: skip
    assert columns["win_rate"][0] == "DOUBLE" and "rounded to 4 places" in columns["sharpe"][1]
    with duckdb.connect(database, read_only=True) as connection:
        best = connection.sql(
            f"""SELECT name, sharpe, win_rate, max_drawdown FROM {BACKTESTS_TABLE}
                WHERE "window" = 'out_of_sample' ORDER BY score DESC NULLS LAST LIMIT 10"""
        ).pl()
        described = [(row[0], row[1]) for row in connection.execute(f"DESCRIBE {BACKTESTS_TABLE}").fetchall()]
    rows = [dict(record.data) for record in table.records]
    assert len(rows) == best.height > 0
    for shown, stored in zip(rows, best.iter_rows(named=True)):
        assert shown["name"] == stored["name"]
        for metric in ("sharpe", "win_rate", "max_drawdown"):
            expected = stored[metric]
            if expected is None or not math.isfinite(expected):
                assert shown[metric] is None
            else:
                assert shown[metric] == pytest.approx(expected, abs=5e-5)
    # The column schema declared on research/backtests is the table written.
    schema = next(a for a in assets if BACKTESTS_KEY in a.keys).specs_by_key[BACKTESTS_KEY].metadata[COLUMN_SCHEMA]
    assert [(column.name, column.type) for column in schema.columns] == described
