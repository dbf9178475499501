"""The ranking assets on a real DuckDB file: keep the top N of each kind, archive the rest with
a reason, restore what climbs back, and an append-only ranking history across runs."""

import dagster as dg
import duckdb

from tracer_assets.ranking.assets import build_ranking_assets
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import load_settings


def write_scores(database: str, models: dict[str, float], ensembles: dict[str, float], strategies: dict) -> None:
    with duckdb.connect(database) as connection:
        connection.execute("CREATE SCHEMA IF NOT EXISTS ml")
        connection.execute("CREATE SCHEMA IF NOT EXISTS research")
        connection.execute("CREATE OR REPLACE TABLE ml.models (model_id VARCHAR, f1_macro DOUBLE)")
        connection.executemany("INSERT INTO ml.models VALUES (?, ?)", list(models.items()))
        connection.execute("CREATE OR REPLACE TABLE ml.ensembles (ensemble_id VARCHAR, accuracy DOUBLE)")
        connection.executemany("INSERT INTO ml.ensembles VALUES (?, ?)", list(ensembles.items()))
        connection.execute(
            'CREATE OR REPLACE TABLE research.backtests (strategy_id VARCHAR, name VARCHAR, "window" VARCHAR, '
            "score DOUBLE)"
        )
        connection.executemany(
            "INSERT INTO research.backtests VALUES (?, ?, ?, ?)",
            [(sid, name, window, score) for sid, (name, rows) in strategies.items() for window, score in rows],
        )


def rank_all(database: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    settings = load_settings({"TRACER_KEEP_MODELS": "2", "TRACER_KEEP_ENSEMBLES": "1", "TRACER_KEEP_STRATEGIES": "1"})
    return dg.materialize(
        build_ranking_assets(settings), resources={"duckdb": TracerDuckDB(database=database)}, instance=instance
    )


def test_rankings_keep_archive_restore_and_append_to_the_history(tmp_path):
    database = str(tmp_path / "tracer.duckdb")
    strategies = {
        "s1": ("sma_cross", [("out_of_sample", 1.0), ("out_of_sample", 3.0), ("full", 99.0)]),
        "s2": ("rsi", [("out_of_sample", 1.5), ("out_of_sample", float("nan"))]),
    }
    write_scores(database, {"m1": 0.20, "m2": 0.18, "m3": 0.21}, {"e1": 0.44, "e2": 0.45}, strategies)
    with dg.DagsterInstance.ephemeral() as instance:
        first = rank_all(database, instance)
        assert first.success
        with duckdb.connect(database, read_only=True) as connection:
            models = connection.execute(
                "SELECT item_id, rank, status, decision, reason FROM ranking.models ORDER BY rank"
            ).fetchall()
            strategies_ranked = connection.execute(
                "SELECT item_id, score, status FROM ranking.strategies ORDER BY rank"
            ).fetchall()
            first_history = connection.execute(
                "SELECT kind, item_id, decision, reason, run_id FROM ranking.ranking_history ORDER BY kind, item_id"
            ).fetchall()
        assert models == [
            ("m3", 1, "kept", "kept", "rank 1 of 3, out-of-sample F1 macro 0.21: in the top 2"),
            ("m1", 2, "kept", "kept", "rank 2 of 3, out-of-sample F1 macro 0.2: in the top 2"),
            (
                "m2",
                3,
                "archived",
                "archived",
                "rank 3 of 3, out-of-sample F1 macro 0.18: below the cutoff 0.2 (rank 2, keep 2)",
            ),
        ]
        # The mean over the out-of-sample rows only (s1: (1 + 3) / 2; s2: the NaN left out).
        assert strategies_ranked == [("s1", 2.0, "kept"), ("s2", 1.5, "archived")]
        assert len(first_history) == 3 + 2 + 2

        # The next day m2 climbs back and m1 falls out; e1 overtakes e2.
        write_scores(database, {"m1": 0.10, "m2": 0.30, "m3": 0.21}, {"e1": 0.46, "e2": 0.45}, strategies)
        second = rank_all(database, instance)
        assert second.success
        with duckdb.connect(database, read_only=True) as connection:
            decisions = dict(connection.execute("SELECT item_id, decision FROM ranking.models").fetchall())
            ensembles = dict(connection.execute("SELECT item_id, decision FROM ranking.ensembles").fetchall())
            history = connection.execute(
                "SELECT kind, item_id, decision, reason, run_id FROM ranking.ranking_history ORDER BY kind, item_id"
            ).fetchall()
    assert decisions == {"m2": "restored", "m3": "kept", "m1": "archived"}
    assert ensembles == {"e1": "restored", "e2": "archived"}
    # Append-only: the first run's verdicts are all still there, unchanged, beside the second's.
    first_run = [row for row in history if row[4] == first.run_id]
    assert sorted(first_run) == sorted(first_history)
    assert len(history) == 2 * len(first_history)
    materialization = second.asset_materializations_for_node("ranking__models")[0]
    assert materialization.metadata["restored"].value == 1 and materialization.metadata["archived"].value == 1


def test_the_decisions_read_only_the_strategies_the_ranking_keeps(tmp_path):
    from tracer_assets.trading.assets import backtest_stats

    database = str(tmp_path / "tracer.duckdb")
    with duckdb.connect(database) as connection:
        connection.execute("CREATE SCHEMA research")
        connection.execute(
            """CREATE TABLE research.backtests (strategy_id VARCHAR, name VARCHAR, symbol VARCHAR, timeframe VARCHAR,
               "window" VARCHAR, pnl DOUBLE, win_rate DOUBLE, trades BIGINT, max_drawdown DOUBLE,
               profit_factor DOUBLE, score DOUBLE)"""
        )
        connection.executemany(
            "INSERT INTO research.backtests VALUES (?, ?, 'BTC/USDT', '1h', 'out_of_sample', ?, 0.5, 10, 0.1, 2.0, ?)",
            [("best", "roc_momentum", 900.0, 3.0), ("second", "sma_cross", 100.0, 1.0)],
        )
        # Never ranked yet: the best-scoring one.
        assert backtest_stats(connection)[("BTC/USDT", "1h")]["strategy_id"] == "best"
        connection.execute("CREATE SCHEMA ranking")
        connection.execute("CREATE TABLE ranking.strategies (item_id VARCHAR, status VARCHAR)")
        connection.execute("INSERT INTO ranking.strategies VALUES ('best', 'archived'), ('second', 'kept')")
        stats = backtest_stats(connection)
    assert stats[("BTC/USDT", "1h")]["strategy_id"] == "second"
    assert stats[("BTC/USDT", "1h")]["totalPNL"] == 100.0
