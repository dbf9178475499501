"""What the trading pages of the Dagster UI show: the column schemas of trading.orders,
trading.positions and trading.portfolio (on their definitions), and after each decision run the
newest rows of each as a table (the newest orders; every open position, marked, and the last
closed ones; the newest portfolio rows) and the accounts' equity over time as a plot.

Money stays exact: Decimals are shown as their exact text (tracer_assets/ui_tables.py)."""

from __future__ import annotations

from decimal import Decimal

import dagster as dg
import polars as pl

from tracer_assets.reports.plots import markdown_image, portfolio_plot
from tracer_assets.trading.keys import (
    ORDERS_KEY,
    PORTFOLIO_KEY,
    POSITIONS_KEY,
)
from tracer_assets.trading.positions import Position
from tracer_assets.trading.store import (
    read_equity_history,
    read_newest_orders,
    read_newest_portfolio,
    read_recent_positions,
)
from tracer_assets.ui_tables import column_schema, descriptions_of, frame_table

NEWEST_ORDERS = 20
CLOSED_POSITIONS = 10  # the last closed positions shown beside every open one
NEWEST_PORTFOLIO_ROWS = 50

_MONEY = "DECIMAL(38,18)"
_INSTANT = "TIMESTAMP WITH TIME ZONE"

# Every column of each table, in the table's order (tracer_assets/trading/store.py: DDL, then
# COLUMNS_ADDED): name, DuckDB type, what it holds.
ORDERS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("client_order_id", "VARCHAR", "The order's id at the exchange, derived from the decision and the side"),
    ("decision_id", "VARCHAR", "The decision (trading.decisions) the order carries out"),
    ("signal_storage_id", "BIGINT", "Storage id of the signals/signals materialization decided on"),
    ("run_id", "VARCHAR", "The Dagster run that placed or recorded the order"),
    ("mode", "VARCHAR", "DRY (paper broker) or LIVE (the exchange)"),
    ("symbol", "VARCHAR", "Spot symbol, e.g. BTC/USDT"),
    ("side", "VARCHAR", "buy or sell"),
    ("amount", _MONEY, "Base units ordered, as sized by the risk manager"),
    ("price", _MONEY, "Quote price: the sizing price, then the fill price (slippage included)"),
    ("status", "VARCHAR", "pending, filled, rejected or canceled"),
    ("fee", _MONEY, "Fee paid, in fee_currency (the quote currency when blank)"),
    ("ts", _INSTANT, "When the order was placed or refused (UTC)"),
    ("updated_at", _INSTANT, "Its last change, e.g. the fill (UTC)"),
    ("reason", "VARCHAR", "Why it was refused, or why it exists (a stop or target exit)"),
    ("risk_checks", "VARCHAR", "The risk manager's checks, JSON: name, passed, detail"),
    ("config_hash", "VARCHAR", "Hash of the trading and LLM settings in force"),
    ("exchange_order_id", "VARCHAR", "The exchange's id of a live order"),
    ("filled", _MONEY, "Base units filled, as the exchange reports"),
    ("fee_currency", "VARCHAR", "Currency of the fee (live orders)"),
    ("signal_run_id", "VARCHAR", "The signals run behind the decision"),
    ("audited_at", _INSTANT, "When the order reached the audit files (UTC)"),
)
POSITIONS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("position_id", "VARCHAR", "The client order id of the order that opened it"),
    ("mode", "VARCHAR", "DRY (paper broker) or LIVE (the exchange)"),
    ("symbol", "VARCHAR", "Spot symbol, e.g. BTC/USDT"),
    ("amount", _MONEY, "Base units still held"),
    ("entry_price", _MONEY, "Amount-weighted fill price of the buys"),
    ("cost_basis", _MONEY, "Quote paid for the amount held, fees included"),
    ("stop_loss", _MONEY, "Sold when a candle's low reaches it"),
    ("take_profit", _MONEY, "Sold when a candle's high reaches it"),
    ("opened_at", _INSTANT, "First fill (UTC)"),
    ("closed_at", _INSTANT, "When it was sold out; empty while open (UTC)"),
    ("realized_pnl", _MONEY, "Quote received minus cost basis of what was sold, fees included"),
    ("fees_paid", _MONEY, "Every fee of the position, in quote"),
    ("trailing_stop", _MONEY, "Sold when a candle's low falls this fraction below the peak; empty: none"),
    ("peak", _MONEY, "The fill price and the highs of the candles watched since (the trailing stop's base)"),
)
PORTFOLIO_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ts", _INSTANT, "The account's clock at the decision run (UTC)"),
    ("run_id", "VARCHAR", "The decision run that wrote the row"),
    ("signal_storage_id", "BIGINT", "Storage id of the signals/signals materialization decided on"),
    ("mode", "VARCHAR", "DRY (paper broker) or LIVE (the exchange)"),
    ("quote_balance", _MONEY, "Quote currency (USDT) held"),
    ("positions_value", _MONEY, "Open positions marked to the last close"),
    ("equity", _MONEY, "quote_balance + positions_value"),
    ("realized_pnl", _MONEY, "Realized PnL of every position ever held, fees included"),
    ("unrealized_pnl", _MONEY, "Open positions at the last close minus their cost basis"),
    ("open_positions", "INTEGER", "Positions open"),
)
ORDERS_SCHEMA = column_schema(ORDERS_COLUMNS)
POSITIONS_SCHEMA = column_schema(POSITIONS_COLUMNS)
PORTFOLIO_SCHEMA = column_schema(PORTFOLIO_COLUMNS)

# The columns each page's table shows, in that order (the rest stay in DuckDB).
_ORDER_SHOWN = (
    "ts", "mode", "symbol", "side", "status", "amount", "price", "filled", "fee", "fee_currency", "reason",
    "updated_at", "client_order_id", "exchange_order_id",
)  # fmt: skip
_POSITION_SHOWN = (
    "mode", "symbol", "amount", "entry_price", "cost_basis", "stop_loss", "take_profit", "trailing_stop", "peak",
    "opened_at", "closed_at", "realized_pnl", "fees_paid", "position_id",
)  # fmt: skip
_PORTFOLIO_SHOWN = (
    "ts", "mode", "equity", "quote_balance", "positions_value", "unrealized_pnl", "realized_pnl", "open_positions",
    "signal_storage_id",
)  # fmt: skip
_MARK_DESCRIPTIONS = {
    "state": "open or closed",
    "mark": "The last close this run marked the position to (open positions of this run's mode)",
    "unrealized_pnl": "amount x mark - cost_basis, before the fee a sale would cost",
}


def newest_orders(connection, limit: int = NEWEST_ORDERS) -> pl.DataFrame:
    """The newest `limit` orders of every mode, newest first."""
    return read_newest_orders(connection, _ORDER_SHOWN, limit)


def shown_positions(connection, mode: str, marks: dict[str, Decimal], closed: int = CLOSED_POSITIONS) -> pl.DataFrame:
    """Every open position (the newest first) then the last `closed` closed ones, with their
    state; the open positions of `mode` marked to `marks` (symbol -> price), exactly."""
    frame = read_recent_positions(connection, _POSITION_SHOWN, closed)
    marked, unrealized = [], []
    for row in frame.iter_rows(named=True):
        mark = marks.get(row["symbol"]) if row["state"] == "open" and row["mode"] == mode else None
        marked.append(mark)
        unrealized.append(None if mark is None else _position(row).unrealized_pnl(mark))
    money = frame.schema["amount"]
    return frame.with_columns(
        pl.Series("mark", marked, dtype=money), pl.Series("unrealized_pnl", unrealized, dtype=money)
    ).select("state", "mode", "symbol", "amount", "entry_price", "mark", "unrealized_pnl", *_POSITION_SHOWN[4:])


def _position(row: dict) -> Position:
    fields = ("position_id", "symbol", "amount", "entry_price", "cost_basis", "stop_loss", "take_profit", "opened_at")
    return Position(**{name: row[name] for name in fields})


def newest_portfolio(connection, limit: int = NEWEST_PORTFOLIO_ROWS) -> pl.DataFrame:
    """The newest `limit` portfolio rows of every mode, newest first."""
    return read_newest_portfolio(connection, _PORTFOLIO_SHOWN, limit)


def execution_metadata(
    connection, mode: str, marks: dict[str, Decimal], with_plot: bool = True
) -> dict[dg.AssetKey, dict]:
    """Per asset key (orders, positions, portfolio), the metadata of the pages a trader opens,
    read after the run's write: tables of the newest rows, and the equity plot when `with_plot`
    (a PNG of ~60 KB in the event log: drawn when an order moved, not on every quiet tick)."""
    orders = newest_orders(connection)
    positions = shown_positions(connection, mode, marks)
    portfolio = newest_portfolio(connection)
    plot = {}
    if with_plot:
        plot = {"equity_over_time": dg.MetadataValue.md(markdown_image(portfolio_plot(read_equity_history(connection)),
                                                                     "Accounts' equity"))}  # fmt: skip
    return {
        ORDERS_KEY: {"newest_orders": frame_table(orders, descriptions_of(ORDERS_COLUMNS))},
        POSITIONS_KEY: {
            "positions": frame_table(positions, {**descriptions_of(POSITIONS_COLUMNS), **_MARK_DESCRIPTIONS}),
        },
        PORTFOLIO_KEY: {
            "newest_rows": frame_table(portfolio, descriptions_of(PORTFOLIO_COLUMNS)),
            **plot,
        },
    }
