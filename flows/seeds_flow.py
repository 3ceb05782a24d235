"""The Prefect flow ``fashion-seeds``: one configuration over N seeds, and the spread of its metrics.

- **The sweep's trials.** The seeds are the configuration's ``train.seed`` and the N - 1 after it,
  run as the sweep's trials (:func:`flows.sweep_flow.run_grid`: a workspace each, on Dask, each a DVC
  experiment) with the same overrides. Consecutive seeds from the configuration's own make the
  committed run one of its group, and every group of every revision the same seeds.
- **Paid once.** A trial whose code, data and params DVC has run before comes from DVC's run cache
  (or the DVC remote's, which each workspace pulls): a group already run trains nothing.
- **One summary.** The group's mean, standard deviation, min and max of each headline metric and each
  class's F1 are the flow's result and a table artifact, and its log ends with each headline
  metric's mean ± sd (min–max). No trial is ranked or named best: the seed is the noise the group
  measures, so its best seed is only its luckiest. ``python -m pipeline report`` finds the same
  experiments and compares the groups of the two revisions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.sweep_flow import raise_failed, run_grid, starting_point
from pipeline.core.params import parse_raw_params, validate_params
from pipeline.review.metrics import headline_metrics
from pipeline.review.statistics import Summary, summarize
from pipeline.review.tables import spread

SEEDS_ARTIFACT = "fashion-seeds"


def seeds_of(params_text: str, overrides: dict[str, Any] | None, count: int | None) -> list[int]:
    """The configuration's seed and the ``count - 1`` after it (default count: ``review.seeds``)."""
    params = validate_params(parse_raw_params(params_text, "params.yaml", overrides), source="params.yaml")
    count = count or params.review.seeds
    if count < 1:
        raise ValueError(f"--seeds {count}: a group needs at least 1 run")
    return list(range(params.train.seed, params.train.seed + count))


def group_summary(results: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """Each headline metric's and each class's F1 (``F1 <class>``) n, mean, sd, min and max."""
    values: dict[str, list[float]] = {}
    for result in results:
        scores = headline_metrics(result["metrics"])
        scores |= {f"F1 {name}": f1 for name, f1 in result.get("classes", {}).items()}
        for name, value in scores.items():
            values.setdefault(name, []).append(value)
    summary = {}
    for name in sorted(values, key=lambda name: (name.startswith("F1 "), name)):
        group = summarize(values[name])
        summary[name] = {"n": group.n, "mean": group.mean, "sd": group.sd}
        summary[name] |= {"min": group.low, "max": group.high}
    return summary


def summary_lines(summary: dict[str, dict[str, Any]]) -> list[str]:
    """``test.accuracy over 3 seeds: 0.8790 ± 0.0023 (0.8761–0.8828)``: each headline metric's mean
    and spread (not each class's), as the review report writes them."""
    return [
        f"{name} over {row['n']} seed{'s' * (row['n'] != 1)}: "
        + spread(Summary(row["n"], row["mean"], row["sd"], row["min"], row["max"]))
        for name, row in summary.items()
        if not name.startswith("F1 ")
    ]


def summary_table(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric, the scores to 4 decimals (the report's)."""
    rounded = {name: {key: _round(value) for key, value in row.items()} for name, row in summary.items()}
    return [{"metric": name} | row for name, row in rounded.items()]


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


@flow(name="fashion-seeds")
def fashion_seeds(
    seeds: int | None = None,
    overrides: dict[str, Any] | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    in_process: bool = False,
    rev: str | None = None,
    source: str | None = None,
    push: bool = False,
    project_dir: str = ".",
) -> dict[str, Any]:
    """Run ``seeds`` seeds (default: ``review.seeds``) of commit ``rev`` (default: HEAD plus the
    checkout's uncommitted changes) with ``overrides``, as sweep trials; the group's experiments and
    summary, by seed. The other arguments are :func:`flows.sweep_flow.fashion_sweep`'s."""
    logger = get_run_logger()
    project = Path(project_dir).resolve()
    _, _, params_text = starting_point(project, rev, source)
    seed_values = seeds_of(params_text, overrides, seeds)
    logger.info("a group of %d seeds: %s", len(seed_values), ", ".join(map(str, seed_values)))
    results = run_grid(
        ["train.seed=" + ",".join(map(str, seed_values))],
        overrides,
        workers=workers,
        dask_address=dask_address,
        in_process=in_process,
        rev=rev,
        source=source,
        push=push,
        project=project,
    )
    by_seed = sorted(results, key=lambda result: int(result["overrides"]["train.seed"]))
    done = [result for result in by_seed if "error" not in result]
    summary = group_summary(done)
    if done:
        ran = [int(result["overrides"]["train.seed"]) for result in done]
        create_table_artifact(
            summary_table(summary),
            key=SEEDS_ARTIFACT,
            description=f"Spread over {len(ran)} seeds ({', '.join(map(str, ran))})",
        )
    for line in summary_lines(summary):
        logger.info("%s", line)
    raise_failed(by_seed)
    trials = [
        {"seed": int(result["overrides"]["train.seed"]), "experiment": result["experiment"]}
        | {"stages": result["stages"]}
        for result in by_seed
    ]
    return {"seeds": seed_values, "trials": trials, "summary": summary}
