"""The ranking assets on a real DuckDB file: keep the top N of each kind (ensembles within their
model timeframe), archive the rest with a reason, restore what climbs back, an append-only ranking
history across runs, and the seed's name for it (main.ranking_history) as a view."""

import dagster as dg
import duckdb

from tracer_assets.ranking.assets import build_ranking_assets
from tracer_assets.ranking.keys import ENSEMBLE_RANKING_KEY, HISTORY_SEED_VIEW, HISTORY_TABLE
from tracer_assets.resources.warehouse import TracerDuckDB
from tracer_assets.settings import load_settings


def write_scores(
    database: str, models: dict[str, float], ensembles: dict[str, tuple[str, float | None]], strategies: dict
) -> None:
    """`ensembles`: id -> (timeframe, accuracy)."""
    with duckdb.connect(database) as connection:
        connection.execute("CREATE SCHEMA IF NOT EXISTS ml")
        connection.execute("CREATE SCHEMA IF NOT EXISTS research")
        connection.execute("CREATE OR REPLACE TABLE ml.models (model_id VARCHAR, f1_macro DOUBLE)")
        connection.executemany("INSERT INTO ml.models VALUES (?, ?)", list(models.items()))
        connection.execute(
            "CREATE OR REPLACE TABLE ml.ensembles (ensemble_id VARCHAR, timeframe VARCHAR, accuracy DOUBLE)"
        )
        connection.executemany(
            "INSERT INTO ml.ensembles VALUES (?, ?, ?)", [(e, tf, accuracy) for e, (tf, accuracy) in ensembles.items()]
        )
        connection.execute(
            'CREATE OR REPLACE TABLE research.backtests (strategy_id VARCHAR, name VARCHAR, "window" VARCHAR, '
            "score DOUBLE)"
        )
        connection.executemany(
            "INSERT INTO research.backtests VALUES (?, ?, ?, ?)",
            [(sid, name, window, score) for sid, (name, rows) in strategies.items() for window, score in rows],
        )


def rank_all(database: str, instance: dg.DagsterInstance, **env: str) -> dg.ExecuteInProcessResult:
    settings = load_settings(
        {"TRACER_KEEP_MODELS": "2", "TRACER_KEEP_ENSEMBLES": "1", "TRACER_KEEP_STRATEGIES": "1", **env}
    )
    return dg.materialize(
        build_ranking_assets(settings), resources={"duckdb": TracerDuckDB(database=database)}, instance=instance
    )


def test_rankings_keep_archive_restore_and_append_to_the_history(tmp_path):
    database = str(tmp_path / "tracer.duckdb")
    strategies = {
        "s1": ("sma_cross", [("out_of_sample", 1.0), ("out_of_sample", 3.0), ("full", 99.0)]),
        "s2": ("rsi", [("out_of_sample", 1.5), ("out_of_sample", float("nan"))]),
    }
    write_scores(database, {"m1": 0.20, "m2": 0.18, "m3": 0.21}, {"e1": ("1h", 0.44), "e2": ("1h", 0.45)}, strategies)
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
        write_scores(
            database, {"m1": 0.10, "m2": 0.30, "m3": 0.21}, {"e1": ("1h", 0.46), "e2": ("1h", 0.45)}, strategies
        )
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


def test_ensembles_are_ranked_within_their_model_timeframe(tmp_path):
    database = str(tmp_path / "tracer.duckdb")
    ensembles = {
        # 1h: six ensembles, the near-majority stackers highest on accuracy.
        **{f"1h-h{h}-{m}": ("1h", a) for (h, m), a in zip(
            [(4, "stacked"), (12, "stacked"), (4, "mean"), (4, "vote"), (12, "mean"), (12, "vote")],
            [0.47, 0.46, 0.45, 0.44, 0.43, 0.42],
            strict=True,
        )},
        # 15m: lower accuracies than every 1h one; ranked globally none would be kept.
        "15m-h4-mean": ("15m", 0.41),
        "15m-h4-stacked": ("15m", 0.40),
        # 4h: nothing scored (no out-of-sample rows): the minimum keeps one of them.
        "4h-h4-mean": ("4h", None),
        "4h-h4-vote": ("4h", None),
    }  # fmt: skip
    write_scores(database, {"m1": 0.2}, ensembles, {"s1": ("sma_cross", [("out_of_sample", 1.0)])})
    with dg.DagsterInstance.ephemeral() as instance:
        result = rank_all(database, instance, TRACER_KEEP_ENSEMBLES="3")
    assert result.success
    with duckdb.connect(database, read_only=True) as connection:
        ranked = connection.execute(
            "SELECT ranked_within, item_id, rank, status, reason FROM ranking.ensembles ORDER BY ranked_within, rank"
        ).fetchall()
        history = connection.execute(
            "SELECT ranked_within, item_id, rank FROM ranking.ranking_history WHERE kind = 'ensemble'"
        ).fetchall()
        models_within = connection.execute("SELECT DISTINCT ranked_within FROM ranking.models").fetchall()
    kept = {item for _, item, _, status, _ in ranked if status == "kept"}
    assert kept == {"1h-h4-stacked", "1h-h12-stacked", "1h-h4-mean", "15m-h4-mean", "15m-h4-stacked", "4h-h4-mean"}
    reasons = {item: (within, rank, reason) for within, item, rank, _, reason in ranked}
    assert reasons["1h-h4-vote"] == (
        "1h",
        4,
        "rank 4 of 6 in 1h, out-of-sample accuracy 0.44: below the cutoff 0.45 (rank 3, keep 3)",
    )
    assert reasons["15m-h4-stacked"] == ("15m", 2, "rank 2 of 2 in 15m, out-of-sample accuracy 0.4: in the top 3")
    assert reasons["4h-h4-mean"][2] == "rank 1 of 2 in 4h, out-of-sample accuracy none: kept to hold the minimum of 1"
    assert reasons["4h-h4-vote"][2] == "rank 2 of 2 in 4h, out-of-sample accuracy none: no out-of-sample accuracy"
    assert sorted(history) == sorted((within, item, rank) for item, (within, rank, _) in reasons.items())
    # Strategies and models stay ranked globally.
    assert models_within == [(None,)]
    description = result.job_def.asset_layer.get(ENSEMBLE_RANKING_KEY).description
    assert "within its model timeframe" in description and "top 3 of each model timeframe" in description
    metadata = result.asset_materializations_for_node("ranking__ensembles")[0].metadata
    assert metadata["kept"].value == 6 and metadata["archived"].value == 4


def test_the_history_keeps_its_seed_name_as_a_view(tmp_path):
    database = str(tmp_path / "tracer.duckdb")
    write_scores(database, {"m1": 0.2, "m2": 0.1}, {"e1": ("1h", 0.4)}, {"s1": ("sma_cross", [("out_of_sample", 1.0)])})
    with dg.DagsterInstance.ephemeral() as instance:
        assert rank_all(database, instance).success
        assert rank_all(database, instance).success
    with duckdb.connect(database, read_only=True) as connection:
        kind = connection.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?",
            [HISTORY_SEED_VIEW],
        ).fetchall()
        view = connection.execute(f"SELECT * FROM main.{HISTORY_SEED_VIEW} ORDER BY ALL").fetchall()
        table = connection.execute(f"SELECT * FROM {HISTORY_TABLE} ORDER BY ALL").fetchall()
    assert kind == [("VIEW",)]
    assert len(table) == 2 * (2 + 1 + 1) and view == table


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
