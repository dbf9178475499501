"""The DuckDB file: the connection resource and atomic window replacement.

One file at TRACER_DUCKDB_PATH; schema = asset key prefix (`market/candles` is
`market.candles`). DuckDB allows one writing process at a time: writing assets run in the
`duckdb` pool (limit 1 in the instance's dagster.yaml) and connections retry while another
process holds the file's lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
from dagster import InitResourceContext
from dagster_duckdb import DuckDBResource


class TracerDuckDB(DuckDBResource):
    """dagster-duckdb's resource (lock retries included) that also creates the file's folder,
    works in UTC whatever the machine's zone (TimeZone cannot be set at connect: ICU loads
    after the connection opens) and closes the connection however the block ends."""

    def setup_for_execution(self, context: InitResourceContext) -> None:
        # Resources are set up when the run starts, before its writing steps wait for the pool:
        # if a dead run holds the slot, say which and how to free it, rather than wait unexplained.
        if context.instance is not None and context.run is not None:
            from tracer_assets.pool import blocked_hint

            hint = blocked_hint(context.instance, context.run.run_id)
            if hint and context.log is not None:
                context.log.warning(f"this run's writing steps will wait for the duckdb pool: {hint}")

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        with super().get_connection() as connection:
            try:
                connection.execute("SET TimeZone = 'UTC'")
                yield connection
            finally:
                # dagster-duckdb closes it only when the block succeeds; one left open after a
                # failed step would keep the file's lock in this process.
                connection.close()  # closing twice is harmless


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
    schema, name = table.split(".")
    present = {
        row[0]
        for row in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
    }
    for column, kind, *_ in connection.execute("DESCRIBE SELECT * FROM table_shape").fetchall():
        if column not in present:
            connection.execute(f'ALTER TABLE {table} ADD COLUMN IF NOT EXISTS "{column}" {kind}')
    connection.unregister("table_shape")


def replace_table(connection: duckdb.DuckDBPyConnection, writes: Sequence[tuple[str, pl.DataFrame]]) -> None:
    """Replace the rows of several tables in one transaction: all land, or none does."""
    for table, frame in writes:
        ensure_table(connection, table, frame)
    with transaction(connection):
        for table, frame in writes:
            connection.register("incoming", frame.to_arrow())
            connection.execute(f"DELETE FROM {table}")
            connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
            connection.unregister("incoming")


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
            connection.register("incoming", frame.to_arrow())
            if symbols:
                connection.execute(
                    f"DELETE FROM {table} WHERE {time_column} >= ? AND {time_column} < ? AND list_contains(?, symbol)",
                    [start, end, list(symbols)],
                )
            connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
            connection.unregister("incoming")
