"""The trading schema: its tables, its rows, and every statement that reads or writes them
(`TradingStore`). Both brokers and the trading assets go through here. No Dagster."""

import json
from dataclasses import asdict, fields
from datetime import datetime
from decimal import Decimal
from typing import TypedDict

import polars as pl

from tracer_assets.money import decimal_or_none
from tracer_assets.tables import table_columns, transaction
from tracer_assets.trading.decide import SignalEvent, decision_id
from tracer_assets.trading.orders import client_order_id
from tracer_assets.trading.positions import Position

# Every symbol is quoted in it (the paper account's cash, the live account's PnL currency).
QUOTE = "USDT"

DDL = (
    """CREATE TABLE IF NOT EXISTS trading.decisions (
        decision_id VARCHAR PRIMARY KEY, signal_storage_id BIGINT, run_id VARCHAR, ts TIMESTAMPTZ,
        decided_at TIMESTAMPTZ, symbol VARCHAR, timeframe VARCHAR, action VARCHAR, confidence DECIMAL(38, 18),
        source VARCHAR, reason VARCHAR, mode VARCHAR, price DECIMAL(38, 18), stop_loss DECIMAL(38, 18),
        take_profit DECIMAL(38, 18), size_quote DECIMAL(38, 18), config_hash VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS trading.orders (
        client_order_id VARCHAR PRIMARY KEY, decision_id VARCHAR, signal_storage_id BIGINT, run_id VARCHAR,
        mode VARCHAR, symbol VARCHAR, side VARCHAR, amount DECIMAL(38, 18), price DECIMAL(38, 18),
        status VARCHAR, fee DECIMAL(38, 18), ts TIMESTAMPTZ, updated_at TIMESTAMPTZ, reason VARCHAR,
        risk_checks VARCHAR, config_hash VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS trading.positions (
        position_id VARCHAR, mode VARCHAR, symbol VARCHAR, amount DECIMAL(38, 18), entry_price DECIMAL(38, 18),
        cost_basis DECIMAL(38, 18), stop_loss DECIMAL(38, 18), take_profit DECIMAL(38, 18), opened_at TIMESTAMPTZ,
        closed_at TIMESTAMPTZ, realized_pnl DECIMAL(38, 18), fees_paid DECIMAL(38, 18))""",
    """CREATE TABLE IF NOT EXISTS trading.portfolio (
        ts TIMESTAMPTZ, run_id VARCHAR, signal_storage_id BIGINT, mode VARCHAR, quote_balance DECIMAL(38, 18),
        positions_value DECIMAL(38, 18), equity DECIMAL(38, 18), realized_pnl DECIMAL(38, 18),
        unrealized_pnl DECIMAL(38, 18), open_positions INTEGER)""",
    """CREATE TABLE IF NOT EXISTS trading.paper_state (
        saved_at TIMESTAMPTZ, run_id VARCHAR, signal_storage_id BIGINT, state VARCHAR)""",
)


# Added after the first release of each table (existing files migrate on the next run):
# what a live exchange reports of an order; the signals run behind a decision or order (storage
# ids restart in every Dagster instance, run ids do not); the instant past which a decision's
# signal is too old to trade; when a row reached the audit files; a buy's exits as fractions of
# its fill price (the strategy decider) and a position's trailing stop with its peak.
COLUMNS_ADDED = {
    "trading.orders": (
        ("exchange_order_id", "VARCHAR"),
        ("filled", "DECIMAL(38, 18)"),
        ("fee_currency", "VARCHAR"),
        ("signal_run_id", "VARCHAR"),
        ("audited_at", "TIMESTAMPTZ"),
    ),
    "trading.decisions": (
        ("signal_run_id", "VARCHAR"),
        ("valid_until", "TIMESTAMPTZ"),
        ("audited_at", "TIMESTAMPTZ"),
        ("win_rate", "DOUBLE"),
        ("payoff_ratio", "DOUBLE"),
        ("stop_fraction", "DECIMAL(38, 18)"),
        ("target_fraction", "DECIMAL(38, 18)"),
        ("trailing_stop", "DECIMAL(38, 18)"),
        ("strategy_id", "VARCHAR"),
        ("strategy_parameters", "VARCHAR"),
    ),
    "trading.positions": (
        ("trailing_stop", "DECIMAL(38, 18)"),
        ("peak", "DECIMAL(38, 18)"),
    ),
}


def create_trading_tables(connection) -> None:
    connection.execute("CREATE SCHEMA IF NOT EXISTS trading")
    for statement in DDL:
        connection.execute(statement)
    for table, columns in COLUMNS_ADDED.items():
        present = table_columns(connection, table)
        for column, sql_type in columns:
            if column in present:
                continue
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
            if column == "audited_at":  # rows from before this column were audited when written
                connection.execute(f"UPDATE {table} SET audited_at = ts")
    confidence_type = connection.execute(
        """SELECT data_type FROM information_schema.columns
           WHERE table_schema = 'trading' AND table_name = 'decisions' AND column_name = 'confidence'"""
    ).fetchall()[0][0]
    if confidence_type == "DOUBLE":  # exact from now on; through text, the shortest form of each double
        connection.execute(
            "ALTER TABLE trading.decisions ALTER confidence TYPE DECIMAL(38, 18) "
            "USING confidence::VARCHAR::DECIMAL(38, 18)"
        )


class DecisionRow(TypedDict):
    """A trading.decisions row."""

    decision_id: str
    signal_storage_id: int
    signal_run_id: str
    run_id: str
    ts: datetime
    decided_at: datetime
    symbol: str
    timeframe: str | None
    action: str
    confidence: Decimal
    source: str
    reason: str
    mode: str
    price: Decimal | None
    stop_loss: Decimal | None
    take_profit: Decimal | None
    size_quote: Decimal | None
    config_hash: str
    valid_until: datetime | None
    win_rate: float | None
    payoff_ratio: float | None
    stop_fraction: Decimal | None
    target_fraction: Decimal | None
    trailing_stop: Decimal | None
    strategy_id: str | None
    strategy_parameters: str | None


class OrderRow(TypedDict, total=False):
    """A trading.orders row; the exchange's columns (the last three) only for live orders."""

    client_order_id: str
    decision_id: str
    signal_storage_id: int | None
    signal_run_id: str | None
    run_id: str
    mode: str
    symbol: str
    side: str
    amount: Decimal | None
    price: Decimal | None
    status: str
    fee: Decimal | None
    ts: datetime
    updated_at: datetime
    reason: str | None
    risk_checks: str
    config_hash: str
    exchange_order_id: str | None
    filled: Decimal
    fee_currency: str | None


class PortfolioRow(TypedDict):
    """A trading.portfolio row."""

    ts: datetime
    run_id: str
    signal_storage_id: int
    mode: str
    quote_balance: Decimal
    positions_value: Decimal
    equity: Decimal
    realized_pnl: Decimal
    unrealized_pnl: Decimal
    open_positions: int


def insert_rows(connection, table: str, rows: list) -> None:
    if not rows:
        return
    columns = list(rows[0])
    connection.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [[row[c] for c in columns] for row in rows],
    )


def stored_decisions(connection, event: SignalEvent, symbols) -> pl.DataFrame:
    """The decisions already recorded for this signal event (found by their ids, which carry the
    signals run's id: another instance's event with the same storage id is not this one)."""
    ids = [decision_id(event, symbol) for symbol in symbols]
    return connection.sql(
        "SELECT * FROM trading.decisions WHERE decision_id IN (SELECT unnest(?)) ORDER BY symbol", params=[ids]
    ).pl()


def order_row(
    cid: str,
    decision: dict,
    event: SignalEvent,
    run_id: str,
    mode: str,
    side: str,
    now: datetime,
    config_hash: str,
    verdict,
) -> OrderRow:
    """A trading.orders row for a decision's order as the risk manager sized it, before any
    broker took it: status `rejected` with the risk manager's reason until a broker says more."""
    return {
        "client_order_id": cid,
        "decision_id": decision["decision_id"],
        "signal_storage_id": event.storage_id,
        "signal_run_id": event.run_id,
        "run_id": run_id,
        "mode": mode,
        "symbol": decision["symbol"],
        "side": side,
        "amount": verdict.amount if verdict else None,
        "price": verdict.price if verdict else None,
        "status": "rejected",
        "fee": None,
        "ts": now,
        "updated_at": now,
        "reason": verdict.reason if verdict else f"no price known for {decision['symbol']}: nothing to size with",
        "risk_checks": json.dumps(verdict.as_record()["checks"] if verdict is not None else []),
        "config_hash": config_hash,
    }


def portfolio_row(
    history, quote_balance: Decimal, marks: dict, now, run_id: str, storage_id: int, mode: str
) -> PortfolioRow:
    """A trading.portfolio row from every position ever held (the brokers' `Position`s): the quote
    balance plus the open positions marked to `marks` (symbol -> last close), realized PnL of all."""
    history = list(history)
    open_positions = [p for p in history if p.closed_at is None]
    value = sum((p.amount * marks[p.symbol] for p in open_positions if p.symbol in marks), Decimal(0))
    unrealized = sum((p.unrealized_pnl(marks[p.symbol]) for p in open_positions if p.symbol in marks), Decimal(0))
    return {
        "ts": now,
        "run_id": run_id,
        "signal_storage_id": storage_id,
        "mode": mode,
        "quote_balance": quote_balance,
        "positions_value": value,
        "equity": quote_balance + value,
        "realized_pnl": sum((p.realized_pnl for p in history), Decimal(0)),
        "unrealized_pnl": unrealized,
        "open_positions": len(open_positions),
    }


class TradingStore:
    """Every read and write of the trading schema, in short connections of the DuckDB resource
    (`duckdb`: anything with `get_connection()`): no connection is held between calls, so none is
    held while an exchange request is in flight."""

    def __init__(self, duckdb) -> None:
        self._duckdb = duckdb

    def connection(self):
        return self._duckdb.get_connection()

    def create(self) -> None:
        with self.connection() as connection:
            create_trading_tables(connection)

    # --- decisions ----------------------------------------------------------------------------

    def decisions(self, event: SignalEvent, symbols, *, acting_only: bool = False) -> pl.DataFrame:
        with self.connection() as connection:
            frame = stored_decisions(connection, event, symbols)
        return frame.filter(pl.col("action") != "HOLD") if acting_only else frame

    def record_decisions(self, rows: list[DecisionRow]) -> None:
        with self.connection() as connection, transaction(connection):
            insert_rows(connection, "trading.decisions", rows)

    def bought_by(self) -> dict[str, tuple[str, str | None, str | None]]:
        """Client order id of every buy -> (timeframe, strategy id, parameters) of its decision;
        the strategy is None for a buy of the rules or LLM decider."""
        with self.connection() as connection:
            rows = connection.execute(
                """SELECT o.client_order_id, d.timeframe, d.strategy_id, d.strategy_parameters
                   FROM trading.orders o JOIN trading.decisions d USING (decision_id) WHERE o.side = 'buy'"""
            ).fetchall()
        return {cid: (timeframe, sid, params) for cid, timeframe, sid, params in rows}

    def strategy_reads(self) -> dict[tuple[str, str], datetime]:
        """(symbol, timeframe) -> the newest candle a strategy decision read on that series."""
        with self.connection() as connection:
            rows = connection.execute(
                "SELECT symbol, timeframe, max(ts) FROM trading.decisions "
                "WHERE strategy_id IS NOT NULL AND timeframe IS NOT NULL GROUP BY ALL"
            ).fetchall()
        return {(symbol, timeframe): ts for symbol, timeframe, ts in rows}

    def decided_intents(self) -> dict[str, tuple[str, SignalEvent]]:
        """Every client order id this deployment could have sent, from its recorded decisions (one
        per side: a stop or target exit sells under the decision id of the event that saw it), with
        the decision and signal event behind it. Reconcile adopts an unrecorded order only from here."""
        with self.connection() as connection:
            rows = connection.execute(
                "SELECT decision_id, signal_storage_id, signal_run_id FROM trading.decisions "
                "WHERE signal_run_id IS NOT NULL"
            ).fetchall()
        return {
            client_order_id(did, side): (did, SignalEvent(storage_id, run_id))
            for did, storage_id, run_id in rows
            for side in ("buy", "sell")
        }

    # --- orders -------------------------------------------------------------------------------

    def known_order_ids(self) -> set[str]:
        with self.connection() as connection:
            return {row[0] for row in connection.execute("SELECT client_order_id FROM trading.orders").fetchall()}

    def recorded_orders(self, mode: str) -> list[tuple[str, str, str]]:
        """(client order id, symbol, status) of every order of `mode`."""
        with self.connection() as connection:
            return connection.execute(
                "SELECT client_order_id, symbol, status FROM trading.orders WHERE mode = ?", [mode]
            ).fetchall()

    def record_orders(self, rows: list[OrderRow]) -> None:
        """In their own transaction, at once: a crash after this cannot lose them."""
        with self.connection() as connection, transaction(connection):
            insert_rows(connection, "trading.orders", rows)

    def update_order(self, order, now: datetime, reason: str | None = None) -> None:
        """An order as the exchange now reports it (filled, canceled, ...)."""
        with self.connection() as connection:
            connection.execute(
                """UPDATE trading.orders SET status = ?, filled = ?, price = coalesce(?, price), fee = coalesce(?, fee),
                   fee_currency = coalesce(?, fee_currency), exchange_order_id = coalesce(?, exchange_order_id),
                   updated_at = ?, reason = coalesce(?, reason) WHERE client_order_id = ?""",
                [
                    order.status,
                    order.filled,
                    order.average_price,
                    order.fee,
                    order.fee_currency,
                    order.exchange_order_id,
                    now,
                    reason,
                    order.client_order_id,
                ],
            )

    def mark_canceled(self, cid: str, now: datetime, reason: str) -> None:
        with self.connection() as connection:
            connection.execute(
                "UPDATE trading.orders SET status = 'canceled', updated_at = ?, reason = ? WHERE client_order_id = ?",
                [now, reason, cid],
            )

    def live_executions(self, mode: str) -> list[tuple]:
        """Every filled order of `mode` with the stop/target its buy's decision set, oldest first."""
        with self.connection() as connection:
            return connection.execute(
                """SELECT o.client_order_id, o.symbol, o.side, o.filled, o.price, o.fee, o.fee_currency, o.ts,
                          d.stop_loss, d.take_profit, d.stop_fraction, d.target_fraction, d.trailing_stop
                   FROM trading.orders o
                   LEFT JOIN trading.decisions d ON d.decision_id = o.decision_id AND o.side = 'buy'
                   WHERE o.mode = ? AND o.filled > 0 AND o.price IS NOT NULL""",
                [mode],
            ).fetchall()

    def counts(self) -> tuple[int, int]:
        """(orders, positions) rows in the trading schema."""
        with self.connection() as connection:
            orders = connection.execute("SELECT count(*) FROM trading.orders").fetchall()[0][0]
            positions = connection.execute("SELECT count(*) FROM trading.positions").fetchall()[0][0]
        return orders, positions

    # --- positions, portfolio, the paper broker's state ------------------------------------------

    def held(self, mode: str) -> tuple[dict[str, Position], Decimal]:
        """The open positions (per symbol) and the quote balance the last execution of `mode` recorded."""
        columns = [f.name for f in fields(Position)]
        with self.connection() as connection:
            rows = connection.execute(
                f"SELECT {', '.join(columns)} FROM trading.positions WHERE mode = ? AND closed_at IS NULL", [mode]
            ).fetchall()
            balance = connection.execute(
                "SELECT quote_balance FROM trading.portfolio WHERE mode = ? ORDER BY ts DESC LIMIT 1", [mode]
            ).fetchall()
        positions = [Position(**dict(zip(columns, row))) for row in rows]
        return {p.symbol: p for p in positions}, balance[0][0] if balance else Decimal(0)

    def paper_state(self) -> str | None:
        """The paper broker's newest snapshot (JSON), None before its first run."""
        with self.connection() as connection:
            rows = connection.execute(
                "SELECT state FROM trading.paper_state ORDER BY saved_at DESC, rowid DESC LIMIT 1"
            ).fetchall()
        return rows[0][0] if rows else None

    def settle(
        self,
        mode: str,
        positions,
        portfolio: dict,
        *,
        new_orders: list[dict] = (),
        order_updates: list[tuple] = (),
        paper_state: dict | None = None,
    ) -> None:
        """One transaction: the run's new orders (when not recorded one by one), the changes to
        earlier ones, every position of `mode`, a portfolio row, and the paper broker's state."""
        with self.connection() as connection, transaction(connection):
            insert_rows(connection, "trading.orders", list(new_orders))
            for status, price, fee, now, reason, cid in order_updates:
                connection.execute(
                    """UPDATE trading.orders SET status = ?, price = coalesce(?, price), fee = coalesce(?, fee),
                       updated_at = ?, reason = coalesce(?, reason) WHERE client_order_id = ? AND status <> ?""",
                    [status, price, fee, now, reason, cid, status],
                )
            connection.execute("DELETE FROM trading.positions WHERE mode = ?", [mode])
            insert_rows(connection, "trading.positions", [{**asdict(p), "mode": mode} for p in positions])
            insert_rows(connection, "trading.portfolio", [portfolio])
            if paper_state is not None:
                # The broker's state as of this run, and only that: each snapshot holds all history.
                connection.execute("DELETE FROM trading.paper_state")
                insert_rows(connection, "trading.paper_state", [paper_state])

    # --- market data the brokers watch --------------------------------------------------------

    def last_closes(self, symbols) -> dict[str, Decimal]:
        with self.connection() as connection:
            rows = connection.execute(
                "SELECT symbol, arg_max(close, ts) FROM market.candles "
                "WHERE symbol IN (SELECT unnest(?)) GROUP BY symbol",
                [list(symbols)],
            ).fetchall()
        return {symbol: decimal_or_none(close) for symbol, close in rows}

    def candles_since(self, symbol: str, since: datetime, inclusive: bool = True) -> pl.DataFrame:
        """Base candles of `symbol` from `since` (after it when not inclusive), oldest first."""
        condition = "ts >= ?" if inclusive else "ts > ?"
        with self.connection() as connection:
            frame = connection.sql(
                "SELECT symbol, ts, open, high, low, close FROM market.candles "
                f"WHERE symbol = ? AND {condition} ORDER BY ts",
                params=[symbol, since],
            ).pl()
        return frame.with_columns(pl.col("ts").dt.convert_time_zone("UTC"))

    # --- the audit trail ----------------------------------------------------------------------

    def unaudited(self) -> tuple[list[dict], list[dict]]:
        """Decisions and orders committed but not yet in the audit files, oldest first."""
        with self.connection() as connection:
            decisions = (
                connection.sql(
                    "SELECT * EXCLUDE (audited_at) FROM trading.decisions WHERE audited_at IS NULL "
                    "ORDER BY decided_at, symbol"
                )
                .pl()
                .to_dicts()
            )
            orders = (
                connection.sql(
                    "SELECT * EXCLUDE (audited_at) FROM trading.orders WHERE audited_at IS NULL "
                    "ORDER BY ts, client_order_id"
                )
                .pl()
                .to_dicts()
            )
        return decisions, orders

    def last_decision(self, event: SignalEvent) -> dict | None:
        with self.connection() as connection:
            rows = (
                connection.sql(
                    "SELECT * EXCLUDE (audited_at) FROM trading.decisions "
                    "WHERE signal_run_id = ? AND signal_storage_id = ? ORDER BY symbol DESC LIMIT 1",
                    params=[event.run_id, event.storage_id],
                )
                .pl()
                .to_dicts()
            )
        return rows[0] if rows else None

    def mark_audited(self, decision_ids: list[str], order_ids: list[str], now: datetime) -> None:
        with self.connection() as connection, transaction(connection):
            connection.execute(
                "UPDATE trading.decisions SET audited_at = ? WHERE decision_id IN (SELECT unnest(?))",
                [now, decision_ids],
            )
            connection.execute(
                "UPDATE trading.orders SET audited_at = ? WHERE client_order_id IN (SELECT unnest(?))",
                [now, order_ids],
            )


# --- what the UI pages show (trading/ui.py): the newest rows, read after a run's write ----------


def read_newest_orders(connection, columns, limit: int) -> pl.DataFrame:
    """The newest `limit` orders of every mode, newest first."""
    return connection.sql(
        f"SELECT {', '.join(columns)} FROM trading.orders ORDER BY ts DESC, client_order_id LIMIT ?", params=[limit]
    ).pl()


def read_recent_positions(connection, columns, closed: int) -> pl.DataFrame:
    """`state` (open, closed) and `columns` of every open position, then the last `closed` closed
    ones: open first, each group newest first."""
    shown = ", ".join(columns)
    return connection.sql(
        f"""SELECT CASE WHEN closed_at IS NULL THEN 'open' ELSE 'closed' END AS state, {shown}
            FROM (SELECT {shown} FROM trading.positions WHERE closed_at IS NULL
                  UNION ALL
                  (SELECT {shown} FROM trading.positions WHERE closed_at IS NOT NULL
                   ORDER BY closed_at DESC, position_id LIMIT ?))
            ORDER BY closed_at IS NOT NULL, coalesce(closed_at, opened_at) DESC, position_id""",
        params=[closed],
    ).pl()


def read_newest_portfolio(connection, columns, limit: int) -> pl.DataFrame:
    """The newest `limit` portfolio rows of every mode, newest first."""
    return connection.sql(
        f"SELECT {', '.join(columns)} FROM trading.portfolio ORDER BY ts DESC, mode LIMIT ?", params=[limit]
    ).pl()


def read_equity_history(connection) -> pl.DataFrame:
    """ts, mode, equity of every portfolio row, oldest first: what the equity plot draws."""
    return connection.sql("SELECT ts, mode, equity FROM trading.portfolio ORDER BY ts").pl()
