"""Retention: rank items by a score, keep the best, archive the rest with a reason, restore an
archived item that climbs back. Pure Python, no Dagster.

Order: score descending; an item without a finite score ranks after every scored one; ties go
to the smaller item id, so the same scores always give the same ranks. The top `keep` scored
items are kept. An item without a score is archived ("no out-of-sample score"), unless fewer
than `minimum` items would be kept: the best-ranked of the rest are then kept up to `minimum`,
so a bad day never empties what the decision job can read. Every item gets a verdict each run
(`kept`, `archived`, or `restored` for one archived before and kept now): the history logs
every ranking decision, not only the changes.

`rank_and_retain_within` ranks each group (the ensembles' model timeframe) on its own with
`rank_and_retain`: keep, minimum and rank apply within the group, and the reasons name it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

KEPT, ARCHIVED, RESTORED = "kept", "archived", "restored"


@dataclass(frozen=True)
class Verdict:
    item_id: str
    rank: int  # 1-based, over every item of its group (every item when ranked globally)
    score: float | None
    decision: str  # kept, archived, restored
    reason: str
    group: str | None = None  # what the item was ranked within (None: ranked globally)

    @property
    def kept(self) -> bool:
        return self.decision != ARCHIVED


def _finite(score: float | None) -> bool:
    return score is not None and math.isfinite(score)


def _text(score: float | None) -> str:
    return f"{score:.4g}" if _finite(score) else "none"


def rank_and_retain(
    scores: Sequence[tuple[str, float | None]],
    previously_archived: Iterable[str],
    keep: int,
    minimum: int = 1,
    what: str = "score",
    within: str | None = None,
) -> list[Verdict]:
    """A verdict per item, in rank order. `scores`: (item id, score or None); `what` names the
    score in the reasons ("out-of-sample F1"); `within` names the group these items are ranked
    in, if any ("rank 2 of 6 in 1h")."""
    if keep < 1 or minimum < 0:
        raise ValueError(f"keep must be at least 1 and minimum at least 0, not keep={keep}, minimum={minimum}")
    ids = [item_id for item_id, _ in scores]
    if len(set(ids)) != len(ids):
        raise ValueError(f"an item is ranked twice: {sorted({i for i in ids if ids.count(i) > 1})}")
    archived_before = set(previously_archived)
    ordered = sorted(scores, key=lambda item: (not _finite(item[1]), -(item[1] if _finite(item[1]) else 0.0), item[0]))
    scored = sum(1 for _, score in ordered if _finite(score))
    kept_count = min(len(ordered), max(min(keep, scored), minimum))
    cutoff = ordered[kept_count - 1][1] if kept_count else None
    total = len(ordered)
    place = f" in {within}" if within is not None else ""
    verdicts = []
    for rank, (item_id, score) in enumerate(ordered, start=1):
        where = f"rank {rank} of {total}{place}, {what} {_text(score)}"
        if rank <= kept_count:
            if rank > min(keep, scored):
                reason = f"{where}: kept to hold the minimum of {minimum}"
            else:
                reason = f"{where}: in the top {keep}"
            decision = RESTORED if item_id in archived_before else KEPT
            if decision == RESTORED:
                reason = f"back in: {reason}"
        else:
            decision = ARCHIVED
            if not _finite(score):
                reason = f"{where}: no {what}"
            else:
                reason = f"{where}: below the cutoff {_text(cutoff)} (rank {kept_count}, keep {keep})"
        verdicts.append(Verdict(item_id, rank, score if _finite(score) else None, decision, reason, within))
    return verdicts


def rank_and_retain_within(
    scores: Sequence[tuple[str, str, float | None]],
    previously_archived: Iterable[str],
    keep: int,
    minimum: int = 1,
    what: str = "score",
) -> list[Verdict]:
    """`rank_and_retain` in each group on its own. `scores`: (item id, group, score or None).
    The top `keep` of each group are kept, never fewer than `minimum` of a group; verdicts come
    group by group (groups sorted), each group in rank order."""
    if keep < 1 or minimum < 0:
        raise ValueError(f"keep must be at least 1 and minimum at least 0, not keep={keep}, minimum={minimum}")
    ids = [item_id for item_id, _, _ in scores]
    if len(set(ids)) != len(ids):
        raise ValueError(f"an item is ranked twice: {sorted({i for i in ids if ids.count(i) > 1})}")
    archived_before = set(previously_archived)
    groups: dict[str, list[tuple[str, float | None]]] = {}
    for item_id, group, score in scores:
        groups.setdefault(group, []).append((item_id, score))
    return [
        verdict
        for group in sorted(groups)
        for verdict in rank_and_retain(groups[group], archived_before, keep, minimum, what, within=group)
    ]
