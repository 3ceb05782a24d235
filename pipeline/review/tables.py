"""The review's Markdown tables and numbers: old/new metric rows, seed-group comparisons, fixed
decimals. The review report's and the flow's metrics artifact's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pipeline.review.metrics import MetricRow
from pipeline.review.seed_groups import MetricComparison
from pipeline.review.statistics import CONFIDENCE, Summary

DECIMALS = 4
MISSING = "—"


def metric_table(
    rows: Sequence[MetricRow], label: str = "Metric", old: str = "Base", new: str = "New"
) -> Iterator[str]:
    """The Markdown table of ``rows``: old and new values and the change, fixed decimals."""
    yield f"| {label} | {old} | {new} | Change |"
    yield "| --- | ---: | ---: | ---: |"
    for row in rows:
        yield f"| {cell(row.name)} | {number(row.old)} | {number(row.new)} | {delta(row.delta)} |"


def group_table(
    comparisons: Sequence[MetricComparison], label: str = "Metric", old: str = "Base", new: str = "New"
) -> Iterator[str]:
    """Each comparison's two sides (mean ± sd and range), the change with its interval, the verdict."""
    yield f"| {label} | {old} | {new} | Change ({CONFIDENCE:.0%} interval) | Verdict |"
    yield "| --- | ---: | ---: | ---: | --- |"
    for row in comparisons:
        diff = row.difference
        if diff is None:
            change, verdict = MISSING, MISSING
        elif diff.low is None or diff.high is None:
            change, verdict = delta(diff.delta), diff.verdict
        else:
            change = f"{delta(diff.delta)} ({delta(diff.low)} to {delta(diff.high)})"
            verdict = f"**{diff.verdict}**" if diff.significant else diff.verdict
        yield f"| {cell(row.name)} | {spread(row.base)} | {spread(row.new)} | {change} | {verdict} |"


def spread(summary: Summary | None) -> str:
    """``mean ± sd (min–max)``; the mean alone for one run."""
    if summary is None:
        return MISSING
    if summary.sd is None:
        return number(summary.mean)
    return f"{number(summary.mean)} ± {number(summary.sd)} ({number(summary.low)}–{number(summary.high)})"


def number(value: float | None) -> str:
    return MISSING if value is None else f"{value:.{DECIMALS}f}"


def delta(value: float | None) -> str:
    """A signed change, fixed decimals."""
    if value is None:
        return MISSING
    text = f"{value:+.{DECIMALS}f}"
    return f"{0:.{DECIMALS}f}" if float(text) == 0 else text  # never "-0.0000" vs "+0.0000"


def cell(text: str) -> str:
    """``text`` safe in a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def group_size(n: int) -> str:
    """``1 run``, ``3 seeds``: a group's size."""
    return "1 run" if n == 1 else f"{n} seeds"
