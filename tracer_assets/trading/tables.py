"""The trading schema's tables, and how rows go into them (both brokers use these)."""

from decimal import Decimal

# Every symbol is quoted in it (the paper account's cash, the live account's PnL currency).
QUOTE = "USDT"

DDL = (
    """CREATE TABLE IF NOT EXISTS trading.decisions (
        decision_id VARCHAR PRIMARY KEY, signal_storage_id BIGINT, run_id VARCHAR, ts TIMESTAMPTZ,
        decided_at TIMESTAMPTZ, symbol VARCHAR, timeframe VARCHAR, action VARCHAR, confidence DOUBLE,
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


# Added after the first release of trading.orders: what a live exchange reports of an order.
ORDER_COLUMNS_ADDED = (("exchange_order_id", "VARCHAR"), ("filled", "DECIMAL(38, 18)"), ("fee_currency", "VARCHAR"))


def create_trading_tables(connection) -> None:
    connection.execute("CREATE SCHEMA IF NOT EXISTS trading")
    for statement in DDL:
        connection.execute(statement)
    for column, sql_type in ORDER_COLUMNS_ADDED:
        connection.execute(f"ALTER TABLE trading.orders ADD COLUMN IF NOT EXISTS {column} {sql_type}")


def insert_rows(connection, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    connection.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
        [[row[c] for c in columns] for row in rows],
    )


def portfolio_row(history, quote_balance: Decimal, marks: dict, now, run_id: str, storage_id: int, mode: str) -> dict:
    """A trading.portfolio row from every position ever held (the brokers' `Position`s): the quote
    balance plus the open positions marked to `marks` (symbol -> last close), realized PnL of all."""
    history = list(history)
    open_positions = [p for p in history if p.closed_at is None]
    value = sum((p.amount * marks[p.symbol] for p in open_positions if p.symbol in marks), Decimal(0))
    unrealized = sum((p.unrealized_pnl(marks[p.symbol]) for p in open_positions if p.symbol in marks), Decimal(0))
    return {
        "ts": now, "run_id": run_id, "signal_storage_id": storage_id, "mode": mode, "quote_balance": quote_balance,
        "positions_value": value, "equity": quote_balance + value,
        "realized_pnl": sum((p.realized_pnl for p in history), Decimal(0)),
        "unrealized_pnl": unrealized, "open_positions": len(open_positions),
    }
