"""Is a change better, worse, or within seed noise? Pure functions of one value per seed.

A side of a comparison is a group of runs of one configuration that differ only in ``train.seed``.
The interval of the difference of means (new minus base) is scipy's:

- two or more runs a side: Welch's t interval (unequal variances);
- one run on one side, two or more on the other: the prediction interval of that one run against
  the group's spread (the group's standard deviation standing for both sides, its t quantile);
- one run a side: no interval. Seed noise is unknown, so the verdict is "cannot tell".

The verdict is ``better`` or ``worse`` when the interval excludes zero (lower is better for a loss),
``within seed noise`` when it holds zero, ``no change`` when both sides are the same runs. Used by the
review report and its gate, ``python -m flows seeds`` and the flow's metrics artifact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

CONFIDENCE = 0.95

Verdict = Literal["better", "worse", "within seed noise", "no change", "cannot tell"]
Method = Literal["Welch's t", "prediction interval", "same runs", "one run a side", "same configuration"]


@dataclass(frozen=True)
class Summary:
    """One metric over a group: its size, mean, sample standard deviation (None for one run), range."""

    n: int
    mean: float
    sd: float | None
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """New minus base: the difference of means, its interval (None: unknown), verdict and method."""

    delta: float
    low: float | None
    high: float | None
    verdict: Verdict
    method: Method

    @property
    def significant(self) -> bool:
        return self.verdict in ("better", "worse")


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("a group needs at least one run")
    n = len(values)
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((value - mean) ** 2 for value in values) / (n - 1)) if n > 1 else None
    return Summary(n, mean, sd, min(values), max(values))


def higher_is_better(metric: str) -> bool:
    """Accuracy and F1 rise with quality; a loss falls."""
    return "loss" not in metric.rsplit(".", 1)[-1]


def difference(
    base: Sequence[float], new: Sequence[float], *, higher_better: bool = True, confidence: float = CONFIDENCE
) -> Difference:
    """The difference of ``new``'s mean from ``base``'s, its ``confidence`` interval and verdict."""
    from scipy import stats

    old, now = summarize(base), summarize(new)
    delta = now.mean - old.mean
    if sorted(base) == sorted(new):
        return Difference(0.0, 0.0, 0.0, "no change", "same runs")
    if old.n >= 2 and now.n >= 2:
        method: Method = "Welch's t"
        if old.sd == 0 and now.sd == 0:  # exactly repeatable runs: the difference itself
            low = high = delta
        else:
            interval = stats.ttest_ind(new, base, equal_var=False).confidence_interval(confidence)
            low, high = float(interval.low), float(interval.high)
    elif max(old.n, now.n) >= 2:
        method = "prediction interval"
        group = old if old.n >= 2 else now
        assert group.sd is not None
        half = float(stats.t.ppf((1 + confidence) / 2, group.n - 1)) * group.sd * math.sqrt(1 + 1 / group.n)
        low, high = delta - half, delta + half
    else:
        return Difference(delta, None, None, "cannot tell", "one run a side")
    if low > 0:
        verdict: Verdict = "better" if higher_better else "worse"
    elif high < 0:
        verdict = "worse" if higher_better else "better"
    else:
        verdict = "within seed noise"
    return Difference(delta, low, high, verdict, method)
