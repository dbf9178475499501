"""The DuckDB file: the connection resource (the table helpers are in tracer_assets/tables.py).

One file at TRACER_DUCKDB_PATH; schema = asset key prefix (`market/candles` is
`market.candles`). DuckDB allows one writing process at a time: writing assets run in the
`duckdb` pool (limit 1 in the instance's dagster.yaml) and connections retry while another
process holds the file's lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
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
