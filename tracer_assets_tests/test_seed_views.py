"""The seed project's table names kept as views in main (tables.create_alias_view): the refusal
of anything but plain identifiers, a view that follows its table's columns, the view written in
the same transaction as its table, and research/backtests' strategy_backtest_results after a real
materialization. (ml_model_results and ml_ensembles: test_ml_assets.py's end-to-end training;
ranking_history: test_ranking_assets.py.)"""

import re

import dagster as dg
import duckdb
import polars as pl
import pytest
from conftest import write_ohlcv

from tracer_assets.market.keys import OHLCV_KEY
from tracer_assets.research.assets import build_research_assets
from tracer_assets.research.keys import BACKTESTS_SEED_VIEW, BACKTESTS_TABLE
from tracer_assets.resources.step_values import StepValuesIOManager
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import load_settings
from tracer_assets.tables import create_alias_view, replace_table


def view_names(connection) -> list[str]:
    return [
        row[0]
        for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW' ORDER BY 1"
        ).fetchall()
    ]


@pytest.mark.parametrize("alias", ["", "1table", "two words", "main.alias", "x; DROP TABLE t", 'quo"te', "a-b", None])
def test_an_alias_that_is_not_a_plain_identifier_is_refused_by_name(alias):
    with duckdb.connect() as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(ValueError, match=rf"^alias {re.escape(repr(alias))} is not a plain identifier"):
            create_alias_view(connection, alias, "t")
        assert view_names(connection) == []


@pytest.mark.parametrize("table", ["", "a.b.c", "s.", ".t", "t; DROP TABLE t", "(SELECT 1)", "'t'", "t--", None])
def test_a_table_that_is_not_an_identifier_or_schema_identifier_is_refused_by_name(table):
    with duckdb.connect() as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(ValueError, match=r"^table .* is not an identifier or schema\.identifier"):
            create_alias_view(connection, "alias", table)
        assert view_names(connection) == []


def test_the_view_reads_every_row_and_follows_the_tables_new_columns():
    with duckdb.connect() as connection:
        connection.execute("CREATE SCHEMA research")
        replace_table(connection, [("research.t", pl.DataFrame({"x": [1, 2]}))], alias_views=[("seed_t", "research.t")])
        assert connection.execute("SELECT * FROM main.seed_t ORDER BY x").fetchall() == [(1,), (2,)]
        # A later write with a new column: the view is replaced after it, so it shows the column.
        replace_table(
            connection,
            [("research.t", pl.DataFrame({"x": [3], "y": ["new"]}))],
            alias_views=[("seed_t", "research.t")],
        )
        assert connection.execute("SELECT x, y FROM main.seed_t").fetchall() == [(3, "new")]
        # A table without a schema is accepted too.
        create_alias_view(connection, "seed_plain", "seed_t")
        assert connection.execute("SELECT x, y FROM main.seed_plain").fetchall() == [(3, "new")]


def test_a_refused_view_rolls_its_tables_write_back():
    with duckdb.connect() as connection:
        replace_table(connection, [("main.t", pl.DataFrame({"x": [1]}))])
        with pytest.raises(ValueError, match="alias 'bad alias'"):
            replace_table(connection, [("main.t", pl.DataFrame({"x": [2]}))], alias_views=[("bad alias", "main.t")])
        assert connection.execute("SELECT x FROM main.t").fetchall() == [(1,)]


def test_backtests_keep_their_seed_name_as_a_view(tmp_path):
    database = str(tmp_path / "tracer.duckdb")
    write_ohlcv(database)
    settings = load_settings({"TRACER_SYMBOLS": "BTC/USDT", "MACRO_BACKTEST_JSON_PATH": str(tmp_path / "bt.json")})
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(2):  # the second run replaces the rows and the view
            result = dg.materialize(
                [*build_research_assets(settings), dg.AssetSpec(OHLCV_KEY)],
                resources={
                    "duckdb": TracerDuckDB(database=database),
                    "step_values": StepValuesIOManager(base_dir=str(tmp_path / "step_values")),
                },
                instance=instance,
            )
            assert result.success
    with duckdb.connect(database, read_only=True) as connection:
        assert view_names(connection) == [BACKTESTS_SEED_VIEW]
        view = connection.execute(f"SELECT * FROM main.{BACKTESTS_SEED_VIEW} ORDER BY ALL").fetchall()
        table = connection.execute(f"SELECT * FROM {BACKTESTS_TABLE} ORDER BY ALL").fetchall()
        view_columns = connection.execute(f"DESCRIBE main.{BACKTESTS_SEED_VIEW}").fetchall()
        table_columns = connection.execute(f"DESCRIBE {BACKTESTS_TABLE}").fetchall()
    assert table and view == table
    assert view_columns == table_columns
