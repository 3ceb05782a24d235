"""Metrics as the review reads them: a run's nested ``metrics.json`` by dotted name, its per-class
scores, and the old/new rows of two runs. Pure functions of plain dicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricRow:
    name: str
    old: float | None
    new: float | None

    @property
    def delta(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested metrics dict by dotted key, as ``dvc metrics diff`` names them."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


# What a run's numbers take from train's DVCLive summary: the kept epoch's number and val scores.
TRAINED = ("step", "val")


def run_metrics(evaluated: Mapping[str, Any], trained: Mapping[str, Any] | None) -> dict[str, Any]:
    """One run's metrics, as ``dvc metrics show`` lists its two files: evaluate's (``test.*``) and
    train's kept epoch (``step``, ``val.*``). At a revision from before train's summary named the kept
    epoch, evaluate's ``val.*`` stays and train's other keys (the last epoch's) are left out."""
    return {**evaluated, **{key: value for key, value in (trained or {}).items() if key in TRAINED}}


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scores by dotted name: not the kept epoch's number (``step``), nor the per-class scores of
    older revisions."""
    flat = flatten(metrics)
    return {name: value for name, value in flat.items() if ".per_class." not in name and name != "step"}


def per_class_scores(table: Sequence[Mapping[str, Any]] | None, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Scores by class name: from ``per_class.json``'s rows, or, at a revision from before that
    file, from its ``metrics.json`` (``test.per_class``)."""
    if table is not None:
        return {row["class"]: row for row in table}
    return dict(metrics.get("test", {}).get("per_class", {}))


def metric_rows(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[MetricRow]:
    """Old/new rows of every scalar metric except the per-class scores, sorted by name."""
    old_flat, new_flat = headline_metrics(old), headline_metrics(new)
    return [MetricRow(name, old_flat.get(name), new_flat.get(name)) for name in sorted(old_flat | new_flat)]


def per_class_rows(
    old_classes: Mapping[str, Any], new_classes: Mapping[str, Any], score: str = "f1"
) -> list[MetricRow]:
    """Old/new ``score`` of each test class, sorted by class name."""
    return [
        MetricRow(name, old_classes.get(name, {}).get(score), new_classes.get(name, {}).get(score))
        for name in sorted(old_classes.keys() | new_classes.keys())
    ]
