"""DuckDB table helpers shared by the domains: existence, columns, transactions, writes that
land whole or not at all, and the views that keep the seed project's table names. No Dagster
(the connection resource is resources/warehouse.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import duckdb
import polars as pl

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_PLAIN = re.compile(_IDENTIFIER)
_QUALIFIED = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})?")


def table_exists(connection: duckdb.DuckDBPyConnection, table: str) -> bool:
    schema, name = table.split(".")
    found = connection.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, name]
    ).fetchall()
    return found[0][0] > 0


@contextmanager
def transaction(connection: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, or ROLLBACK on any error: the writes inside land together or not at all."""
    connection.execute("BEGIN TRANSACTION")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def table_columns(connection: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The column names of `table` ("schema.name"); empty when it does not exist."""
    schema, name = table.split(".")
    rows = connection.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?", [schema, name]
    ).fetchall()
    return {row[0] for row in rows}


def ensure_table(connection: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Create `table` with the frame's columns if it is not there yet; add those it lacks.

    Outside any write transaction on purpose: in duckdb 2.0.0, a table created and filled
    (one row group or more) in one transaction reads back on that connection as empty to
    statistics-driven queries (count(*), max(ts)) until a checkpoint or reconnect.
    """
    connection.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.')[0]}")
    connection.register("table_shape", frame.head(0).to_arrow())
    connection.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM table_shape")
    # A table made by an earlier version gains the frame's new columns (NULL in its old rows).
    present = table_columns(connection, table)
    for column, kind, *_ in connection.execute("DESCRIBE SELECT * FROM table_shape").fetchall():
        if column not in present:
            connection.execute(f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "{column}" {kind}')
    connection.unregister("table_shape")


def create_alias_view(connection: duckdb.DuckDBPyConnection, alias: str, table: str) -> None:
    """`main.<alias>` as a view of every row of `table` ("name" or "schema.name"): the seed
    project's table names (strategy_backtest_results, ml_ensembles, ...) keep answering. Created
    or replaced after each write of `table`, so the view has the table's current columns. Both
    names must be plain identifiers (`alias` without a schema): anything else is refused."""
    if not isinstance(alias, str) or not _PLAIN.fullmatch(alias):
        raise ValueError(f"alias {alias!r} is not a plain identifier (letters, digits, _; no schema)")
    if not isinstance(table, str) or not _QUALIFIED.fullmatch(table):
        raise ValueError(f"table {table!r} is not an identifier or schema.identifier")
    connection.execute(f"CREATE OR REPLACE VIEW main.{alias} AS SELECT * FROM {table}")


def insert_rows(connection: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """Append the frame's rows to `table` by column name (inside the caller's transaction)."""
    if frame.height:
        connection.register("incoming", frame.to_arrow())
        connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
        connection.unregister("incoming")


def replace_table(
    connection: duckdb.DuckDBPyConnection,
    writes: Sequence[tuple[str, pl.DataFrame]],
    alias_views: Sequence[tuple[str, str]] = (),
) -> None:
    """Replace the rows of several tables in one transaction: all land, or none does.
    `alias_views` (alias, table) are (re)created in the same transaction, after the writes."""
    for table, frame in writes:
        ensure_table(connection, table, frame)
    with transaction(connection):
        for table, frame in writes:
            connection.execute(f"DELETE FROM {table}")
            insert_rows(connection, table, frame)
        for alias, table in alias_views:
            create_alias_view(connection, alias, table)


def replace_window(
    connection: duckdb.DuckDBPyConnection,
    writes: Sequence[tuple[str, pl.DataFrame, str, Sequence[str]]],
    start: datetime,
    end: datetime,
) -> None:
    """Replace [start, end) of several tables in one transaction: all land, or none does.

    Each write is (table, frame, time column, symbols): rows of those symbols whose time
    column lies in the window are deleted, then the frame is inserted. Symbols not named
    keep their rows (a symbol that failed to download keeps what it had).
    """
    for table, frame, _, _ in writes:
        ensure_table(connection, table, frame)
    with transaction(connection):
        for table, frame, time_column, symbols in writes:
            if symbols:
                connection.execute(
                    f"DELETE FROM {table} WHERE {time_column} >= ? AND {time_column} < ? AND list_contains(?, symbol)",
                    [start, end, list(symbols)],
                )
            insert_rows(connection, table, frame)
