"""What the trading pages of the UI show after a decision run (tracer_assets/trading/ui.py): the
newest orders, the positions (open ones marked) and the newest portfolio rows as tables with a
typed, described column schema, exact money, and the accounts' equity as a plot; and the column
schemas declared on the main tables match the tables the runs write."""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import dagster as dg
import duckdb
import pytest
from test_trading_assets import (
    CLOCK_START,
    decide,
    make_btc_1h_strongly_bullish,
    newest_signal_event,
    query,
    replay_clock,  # noqa: F401 (a fixture)
    run,
)

from tracer_assets.definitions import TICK_JOB, build_definitions
from tracer_assets.market.keys import CANDLES_KEY
from tracer_assets.settings import load_settings
from tracer_assets.signals.keys import SIGNALS_KEY
from tracer_assets.trading.keys import ORDERS_KEY, PORTFOLIO_KEY, POSITIONS_KEY
from tracer_assets.ui_tables import COLUMN_SCHEMA

# The scenes here are staged for the rules decider.
pytestmark = pytest.mark.usefixtures("rules_decider")

PNG_PREFIX = "![Accounts' equity](data:image/png;base64,"


def stored_metadata(key: dg.AssetKey) -> dict:
    """The newest materialization's metadata of `key` as the instance stored it (serialized and back)."""
    with dg.DagsterInstance.get() as instance:
        record = instance.fetch_materializations(key, limit=1).records[0]
    return dict(record.asset_materialization.metadata)


def rows_of(table: dg.TableMetadataValue) -> list[dict]:
    return [dict(record.data) for record in table.records]


def columns_of(table: dg.TableMetadataValue) -> dict[str, tuple[str, str | None]]:
    return {column.name: (column.type, column.description) for column in table.schema.columns}


def described(database: str, table: str) -> list[tuple[str, str]]:
    with duckdb.connect(database, read_only=True) as connection:
        return [(row[0], row[1]) for row in connection.execute(f"DESCRIBE {table}").fetchall()]


def test_a_decision_runs_pages_show_the_newest_rows_exactly_and_the_equity(tracer_env, replay_clock):  # noqa: F811
    database = tracer_env["TRACER_DUCKDB_PATH"]
    storage_id = newest_signal_event()
    make_btc_1h_strongly_bullish(database, storage_id)
    decide(storage_id)

    orders = stored_metadata(ORDERS_KEY)["newest_orders"]
    assert isinstance(orders, dg.TableMetadataValue)
    [order] = rows_of(orders)
    stored = query(database, "SELECT * FROM trading.orders").row(0, named=True)
    assert (order["symbol"], order["side"], order["status"], order["mode"]) == ("BTC/USDT", "buy", "pending", "DRY")
    # Money is exact text (no float on the way), instants ISO 8601 in UTC, blanks None.
    assert isinstance(order["amount"], str) and Decimal(order["amount"]) == stored["amount"]
    assert Decimal(order["price"]) == stored["price"]
    assert order["ts"] == stored["ts"].astimezone(UTC).isoformat()
    assert order["fee"] is None and order["exchange_order_id"] is None
    assert order["client_order_id"] == stored["client_order_id"]
    schema = columns_of(orders)
    assert list(schema)[:5] == ["ts", "mode", "symbol", "side", "status"]
    assert schema["amount"][0] == "DECIMAL(38,18)" and schema["ts"][0] == "TIMESTAMP WITH TIME ZONE"
    assert all(description for _, description in schema.values())

    assert rows_of(stored_metadata(POSITIONS_KEY)["positions"]) == []  # nothing filled yet: the schema only
    assert "unrealized_pnl" in columns_of(stored_metadata(POSITIONS_KEY)["positions"])

    # The next tick's candles fill the order; the next decision run shows the open position, marked.
    replay_clock(CLOCK_START + timedelta(minutes=30))
    assert run(TICK_JOB, partition_key="2024-09-05").success
    decide(newest_signal_event())

    [order] = rows_of(stored_metadata(ORDERS_KEY)["newest_orders"])
    assert order["status"] == "filled"
    positions = stored_metadata(POSITIONS_KEY)["positions"]
    [position] = rows_of(positions)
    held = query(database, "SELECT * FROM trading.positions").row(0, named=True)
    assert (position["state"], position["symbol"], position["closed_at"]) == ("open", "BTC/USDT", None)
    assert Decimal(position["amount"]) == held["amount"] and Decimal(position["cost_basis"]) == held["cost_basis"]
    mark = Decimal(position["mark"])
    unrealized = (held["amount"] * mark - held["cost_basis"]).quantize(Decimal("1e-18"), rounding=ROUND_HALF_EVEN)
    assert Decimal(position["unrealized_pnl"]) == unrealized
    assert columns_of(positions)["mark"][1]

    metadata = stored_metadata(PORTFOLIO_KEY)
    newest = rows_of(metadata["newest_rows"])
    book = query(database, "SELECT * FROM trading.portfolio ORDER BY ts DESC")
    assert len(newest) == book.height == 2
    assert [Decimal(row["equity"]) for row in newest] == book["equity"].to_list()
    assert newest[0]["open_positions"] == 1 and Decimal(newest[0]["unrealized_pnl"]) == unrealized
    assert metadata["equity"].value == float(book["equity"][0])  # the float Dagster charts across runs
    plot = metadata["equity_over_time"].value
    assert plot.startswith(PNG_PREFIX) and len(plot) > len(PNG_PREFIX) + 1000

    # The column schemas declared on the main tables' definitions are the tables written.
    defs = build_definitions(load_settings())
    tables = {
        CANDLES_KEY: "market.candles",
        SIGNALS_KEY: "signals.signals",
        ORDERS_KEY: "trading.orders",
        POSITIONS_KEY: "trading.positions",
        PORTFOLIO_KEY: "trading.portfolio",
    }
    for key, table in tables.items():
        declared = defs.resolve_assets_def(key).specs_by_key[key].metadata[COLUMN_SCHEMA]
        assert [(column.name, column.type) for column in declared.columns] == described(database, table), table
        assert all(column.description for column in declared.columns), table
