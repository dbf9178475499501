"""Retention arithmetic: keep the top N, archive the rest with rank, score and cutoff, restore an
item that climbs back, hold a minimum, break ties the same way every time; and all of it within
groups (the ensembles' model timeframe), each group on its own."""

import pytest

from tracer_assets.ranking.retention import ARCHIVED, KEPT, RESTORED, rank_and_retain, rank_and_retain_within


def decisions(verdicts):
    return {v.item_id: v.decision for v in verdicts}


def test_the_top_n_are_kept_and_the_rest_archived_with_rank_score_and_cutoff():
    verdicts = rank_and_retain([("a", 0.5), ("b", 2.0), ("c", 1.0), ("d", -0.3)], [], keep=2)
    assert [v.item_id for v in verdicts] == ["b", "c", "a", "d"]
    assert [v.rank for v in verdicts] == [1, 2, 3, 4]
    assert decisions(verdicts) == {"b": KEPT, "c": KEPT, "a": ARCHIVED, "d": ARCHIVED}
    assert verdicts[2].reason == "rank 3 of 4, score 0.5: below the cutoff 1 (rank 2, keep 2)"
    assert verdicts[0].reason == "rank 1 of 4, score 2: in the top 2"


def test_an_archived_item_that_climbs_back_is_restored():
    first = rank_and_retain([("a", 0.5), ("b", 2.0), ("c", 1.0)], [], keep=2)
    archived = [v.item_id for v in first if not v.kept]
    assert archived == ["a"]
    second = rank_and_retain([("a", 3.0), ("b", 2.0), ("c", 1.0)], archived, keep=2)
    assert decisions(second) == {"a": RESTORED, "b": KEPT, "c": ARCHIVED}
    assert second[0].reason.startswith("back in: rank 1 of 3")
    # Still archived the next day: the verdict is logged again, as archived.
    third = rank_and_retain([("a", 3.0), ("b", 2.0), ("c", 1.0)], ["c"], keep=2)
    assert decisions(third) == {"a": KEPT, "b": KEPT, "c": ARCHIVED}


def test_ties_are_broken_by_item_id_whatever_the_input_order():
    rows = [("z", 1.0), ("m", 1.0), ("a", 1.0), ("q", 0.0)]
    for order in (rows, rows[::-1], sorted(rows)):
        verdicts = rank_and_retain(order, [], keep=2)
        assert [v.item_id for v in verdicts] == ["a", "m", "z", "q"]
        assert decisions(verdicts)["z"] == ARCHIVED


def test_items_without_a_score_are_archived_but_never_below_the_minimum():
    nan = float("nan")
    verdicts = rank_and_retain([("a", None), ("b", nan), ("c", 0.2)], [], keep=3, minimum=1)
    assert decisions(verdicts) == {"c": KEPT, "a": ARCHIVED, "b": ARCHIVED}
    assert verdicts[1].reason == "rank 2 of 3, score none: no score"
    # Nothing scored today: the best-ranked are kept up to the minimum, and say why.
    verdicts = rank_and_retain([("b", None), ("a", None), ("c", None)], [], keep=3, minimum=2, what="out-of-sample F1")
    assert decisions(verdicts) == {"a": KEPT, "b": KEPT, "c": ARCHIVED}
    assert verdicts[0].reason == "rank 1 of 3, out-of-sample F1 none: kept to hold the minimum of 2"
    assert verdicts[0].score is None
    # Fewer items than the minimum: all kept.
    assert decisions(rank_and_retain([("a", -1.0)], [], keep=1, minimum=3)) == {"a": KEPT}


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="keep must be at least 1"):
        rank_and_retain([("a", 1.0)], [], keep=0)
    with pytest.raises(ValueError, match="ranked twice: \\['a'\\]"):
        rank_and_retain([("a", 1.0), ("a", 2.0)], [], keep=1)


# --- ranked within groups (the ensembles' model timeframe) ---------------------------------------


def test_each_group_is_ranked_on_its_own_with_its_own_top_n_and_cutoff():
    scores = [
        *((f"1h-{i}", "1h", score) for i, score in enumerate([0.50, 0.48, 0.46, 0.45, 0.44, 0.43])),
        ("4h-a", "4h", 0.30),
        ("4h-b", "4h", 0.20),
        ("15m-a", "15m", 0.41),
    ]
    verdicts = rank_and_retain_within(scores, [], keep=3, what="out-of-sample accuracy")
    # Globally the slow 1h ones would fill the top 3; within their timeframe every one has its own.
    assert [v.item_id for v in verdicts] == ["15m-a", "1h-0", "1h-1", "1h-2", "1h-3", "1h-4", "1h-5", "4h-a", "4h-b"]
    assert {v.item_id: v.rank for v in verdicts if v.group == "1h"} == {f"1h-{i}": i + 1 for i in range(6)}
    assert [v.rank for v in verdicts if v.group == "4h"] == [1, 2]
    assert decisions(verdicts) == {
        "15m-a": KEPT,
        **{f"1h-{i}": KEPT if i < 3 else ARCHIVED for i in range(6)},
        "4h-a": KEPT,
        "4h-b": KEPT,
    }
    by_id = {v.item_id: v for v in verdicts}
    assert by_id["1h-3"].reason == (
        "rank 4 of 6 in 1h, out-of-sample accuracy 0.45: below the cutoff 0.46 (rank 3, keep 3)"
    )
    assert by_id["4h-b"].reason == "rank 2 of 2 in 4h, out-of-sample accuracy 0.2: in the top 3"
    assert {v.group for v in verdicts} == {"15m", "1h", "4h"}
    # Ranked globally, the group is not named and not set.
    assert rank_and_retain([("a", 1.0)], [], keep=1)[0].group is None


def test_the_minimum_and_restoring_apply_within_each_group():
    nan = float("nan")
    scores = [("1h-a", "1h", None), ("1h-b", "1h", nan), ("4h-a", "4h", 0.3), ("4h-b", "4h", 0.2)]
    verdicts = rank_and_retain_within(scores, ["1h-a", "4h-b"], keep=1, minimum=1)
    # 1h scored nothing today: its best-ranked is kept to hold the minimum (and is back in).
    assert decisions(verdicts) == {"1h-a": RESTORED, "1h-b": ARCHIVED, "4h-a": KEPT, "4h-b": ARCHIVED}
    assert verdicts[0].reason == "back in: rank 1 of 2 in 1h, score none: kept to hold the minimum of 1"
    assert verdicts[1].reason == "rank 2 of 2 in 1h, score none: no score"
    # minimum 0: a group with nothing scored keeps nothing.
    verdicts = rank_and_retain_within(scores, [], keep=1, minimum=0)
    assert decisions(verdicts) == {"1h-a": ARCHIVED, "1h-b": ARCHIVED, "4h-a": KEPT, "4h-b": ARCHIVED}
    assert rank_and_retain_within([], [], keep=1) == []


def test_grouped_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="ranked twice: \\['a'\\]"):
        rank_and_retain_within([("a", "1h", 1.0), ("a", "4h", 2.0)], [], keep=1)
    with pytest.raises(ValueError, match="keep must be at least 1"):
        rank_and_retain_within([], [], keep=0)
