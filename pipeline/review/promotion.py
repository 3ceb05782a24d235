"""Whether a model version may take a registry stage: only beyond seed noise.

The candidate's seed group must beat the stage's current version's group on test accuracy (the
95% interval of the change excludes 0, Welch's t as the review report computes it), and no class's
F1 may drop significantly by more than ``review.max_class_f1_drop``. A stage with no version takes
its first one without a comparison. Pure: groups of :class:`~pipeline.review.seed_groups.Run` in, a
:class:`Decision` out, whose one-line reason is what ``python -m flows promote`` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.review.seed_groups import Run, compare_groups
from pipeline.review.statistics import CONFIDENCE, Difference
from pipeline.review.tables import delta, group_size, number

PROMOTION_METRIC = "test.accuracy"


@dataclass(frozen=True)
class Decision:
    """Whether to assign the stage, and why, in one line."""

    assign: bool
    reason: str


def decide(
    current: Sequence[Run] | None, candidate: Sequence[Run], stage: str, max_class_f1_drop: float
) -> Decision:
    """Assign ``stage`` to the candidate only if its group beats ``current``'s (None: the stage is empty)."""
    if not candidate:
        return Decision(False, "the candidate has no run to judge")
    if not current:
        return Decision(True, f"{stage} holds no version yet: its first is assigned without a comparison")
    if current[0].configuration == candidate[0].configuration:
        return Decision(False, f"the same configuration as {stage}'s version: no change to promote")
    (accuracy,) = [row for row in compare_groups(current, candidate) if row.name == PROMOTION_METRIC] or [
        None
    ]
    if accuracy is None or accuracy.difference is None:
        return Decision(False, f"{PROMOTION_METRIC} is missing from one side: nothing to compare")
    diff = accuracy.difference
    measured = f"{PROMOTION_METRIC} {delta(diff.delta)} ({_interval(diff)}; {_groups(current, candidate)})"
    if diff.verdict != "better":
        why = "within seed noise" if diff.verdict in ("within seed noise", "no change") else diff.verdict
        return Decision(False, f"{measured}: {why}, so {stage} keeps its version")
    for row in compare_groups(current, candidate, scores="classes"):
        class_diff = row.difference
        if class_diff and class_diff.verdict == "worse" and round(-class_diff.delta, 9) > max_class_f1_drop:
            return Decision(
                False,
                f"{measured}, but the F1 of {row.name} dropped {number(-class_diff.delta)} "
                f"({_interval(class_diff)}), more than review.max_class_f1_drop {number(max_class_f1_drop)}",
            )
    return Decision(True, f"{measured}: beyond seed noise")


def _interval(diff: Difference) -> str:
    if diff.low is None or diff.high is None:
        return f"no interval: {diff.method}"
    return f"{CONFIDENCE:.0%} interval {delta(diff.low)} to {delta(diff.high)}, {diff.method}"


def _groups(current: Sequence[Run], candidate: Sequence[Run]) -> str:
    return f"{group_size(len(candidate))} against {group_size(len(current))}"
