"""The trading schema's tables, and how rows go into them (both brokers use these)."""

import json
from datetime import datetime
from decimal import Decimal

import polars as pl

from tracer_assets.trading.decide import SignalEvent, decision_id

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
# signal is too old to trade; when a row reached the audit files.
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
    ),
}


def create_trading_tables(connection) -> None:
    connection.execute("CREATE SCHEMA IF NOT EXISTS trading")
    for statement in DDL:
        connection.execute(statement)
    for table, columns in COLUMNS_ADDED.items():
        schema, name = table.split(".")
        present = {
            row[0]
            for row in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
                [schema, name],
            ).fetchall()
        }
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


def insert_rows(connection, table: str, rows: list[dict]) -> None:
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
) -> dict:
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


def portfolio_row(history, quote_balance: Decimal, marks: dict, now, run_id: str, storage_id: int, mode: str) -> dict:
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
