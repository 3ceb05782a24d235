"""The regression gate of the ``review`` params section: a floor on the new test accuracy and a cap
on its drop against the base; with seed groups, on the groups' means and the change's interval."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core.params import ReviewParams
from pipeline.review.metrics import flatten
from pipeline.review.seed_groups import Groups, MetricComparison
from pipeline.review.statistics import CONFIDENCE, Difference
from pipeline.review.tables import delta, group_size, number

GATE_METRIC = "test.accuracy"


@dataclass(frozen=True)
class GateCheck:
    param: str
    threshold: float | None
    value: float | None
    passed: bool
    message: str


def gate_checks(
    old: Mapping[str, Any], new: Mapping[str, Any], review: ReviewParams, groups: Groups | None = None
) -> list[GateCheck]:
    """The regression gate: a floor on the new test accuracy and a cap on its drop against the base.

    With seed groups (``groups.seeded``) the floor applies to the new group's mean, and the cap fails
    only a drop that is significant (its 95% interval below zero) and larger than the cap."""
    if groups is not None and groups.seeded and (compared := groups.of(GATE_METRIC)) is not None:
        return _group_gate_checks(compared, review)
    old_value, new_value = flatten(old).get(GATE_METRIC), flatten(new).get(GATE_METRIC)
    checks = []
    floor = review.min_test_accuracy
    if new_value is None:
        passed = floor is None
        message = f"{GATE_METRIC} is missing from the new metrics"
    else:
        passed = floor is None or new_value >= floor
        relation = "is below" if not passed else "meets"
        message = f"{GATE_METRIC} {number(new_value)} {relation} review.min_test_accuracy {number(floor)}"
    checks.append(GateCheck("review.min_test_accuracy", floor, new_value, passed, message))

    cap = review.max_test_accuracy_drop
    drop = None if old_value is None or new_value is None else old_value - new_value
    if drop is None:
        passed = cap is None
        message = f"{GATE_METRIC} is missing from the base or the new metrics"
    else:
        # Rounding keeps float noise (0.75 - 0.74 = 0.0100000001) from failing a drop equal to the cap.
        passed = cap is None or round(drop, 9) <= cap
        relation = "more than" if not passed else "within"
        change = _change(drop)
        message = (
            f"{GATE_METRIC} {change} ({number(old_value)} -> {number(new_value)}), "
            f"{relation} review.max_test_accuracy_drop {number(cap)}"
        )
    checks.append(GateCheck("review.max_test_accuracy_drop", cap, drop, passed, message))
    return checks


def _group_gate_checks(compared: MetricComparison, review: ReviewParams) -> list[GateCheck]:
    base, new, diff = compared.base, compared.new, compared.difference
    checks = []
    floor = review.min_test_accuracy
    if new is None:
        checks.append(
            GateCheck("review.min_test_accuracy", floor, None, floor is None, f"{GATE_METRIC} is missing")
        )
    else:
        passed = floor is None or new.mean >= floor
        relation = "is below" if not passed else "meets"
        message = (
            f"{GATE_METRIC} {number(new.mean)} (mean of {group_size(new.n)}) {relation} "
            f"review.min_test_accuracy {number(floor)}"
        )
        checks.append(GateCheck("review.min_test_accuracy", floor, new.mean, passed, message))
    cap = review.max_test_accuracy_drop
    if base is None or diff is None:
        message = f"{GATE_METRIC} is missing from the base or the new metrics"
        checks.append(GateCheck("review.max_test_accuracy_drop", cap, None, cap is None, message))
        return checks
    drop = -diff.delta
    larger = round(drop, 9) > (cap or 0.0)
    passed = cap is None or not (diff.verdict == "worse" and larger)
    if diff.verdict == "worse":
        judged = "a significant drop, " + ("more than" if larger else "within")
    else:
        judged = f"{diff.verdict}, so within"
    message = (
        f"{GATE_METRIC} {_change(drop)} (mean of {group_size(base.n)} {number(base.mean)} -> "
        f"{group_size(new.n)} {number(new.mean)}; {_interval_text(diff)}): {judged} "
        f"review.max_test_accuracy_drop {number(cap)}"
    )
    checks.append(GateCheck("review.max_test_accuracy_drop", cap, drop, passed, message))
    return checks


def _change(drop: float) -> str:
    return f"dropped {number(drop)}" if drop > 0 else f"rose {number(-drop)}" if drop < 0 else "held"


def _interval_text(diff: Difference) -> str:
    if diff.low is None or diff.high is None:
        return "no interval: " + diff.method
    return f"{CONFIDENCE:.0%} interval of the change {delta(diff.low)} to {delta(diff.high)}, {diff.method}"
