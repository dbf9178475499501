"""Retention arithmetic: keep the top N, archive the rest with rank, score and cutoff, restore an
item that climbs back, hold a minimum, break ties the same way every time."""

import pytest

from tracer_assets.ranking.retention import ARCHIVED, KEPT, RESTORED, rank_and_retain


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
