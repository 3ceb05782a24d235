"""The Prefect flow ``fashion-seeds``: one configuration over N seeds, and the spread of its metrics.

- **The sweep's trials.** The seeds are the configuration's ``train.seed`` and the N - 1 after it,
  run as trials of :func:`flows.sweep_flow.fashion_sweep` (a workspace each, on Dask, each a DVC
  experiment) with the same overrides. Consecutive seeds from the configuration's own make the
  committed run one of its group, and every group of every revision the same seeds.
- **Paid once.** A trial whose code, data and params DVC has run before comes from DVC's run cache
  (or the DVC remote's, which each workspace pulls): a group already run trains nothing.
- **One summary.** The group's mean, standard deviation, min and max of each headline metric and each
  class's F1 are the flow's result and a table artifact. ``python -m pipeline report`` finds the
  same experiments and compares the groups of the two revisions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.sweep_flow import fashion_sweep, starting_point
from pipeline.core.params import parse_raw_params, validate_params
from pipeline.review.metrics import headline_metrics
from pipeline.review.statistics import summarize

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
    summary. The other arguments are :func:`flows.sweep_flow.fashion_sweep`'s."""
    logger = get_run_logger()
    project = Path(project_dir).resolve()
    _, _, params_text = starting_point(project, rev, source)
    seed_values = seeds_of(params_text, overrides, seeds)
    logger.info("a group of %d seeds: %s", len(seed_values), ", ".join(map(str, seed_values)))
    results = fashion_sweep(
        grid=["train.seed=" + ",".join(map(str, seed_values))],
        overrides=overrides,
        workers=workers,
        dask_address=dask_address,
        in_process=in_process,
        rev=rev,
        source=source,
        push=push,
        project_dir=project_dir,
    )
    summary = group_summary(results)
    create_table_artifact(
        summary_table(summary),
        key=SEEDS_ARTIFACT,
        description=f"Spread over {len(seed_values)} seeds ({', '.join(map(str, seed_values))})",
    )
    for name in ("val.accuracy", "test.accuracy"):
        if row := summary.get(name):
            logger.info(
                "%s over %d seeds: mean %.4f, sd %s, min %.4f, max %.4f",
                name,
                row["n"],
                row["mean"],
                "-" if row["sd"] is None else f"{row['sd']:.4f}",
                row["min"],
                row["max"],
            )
    trials = [
        {"seed": int(result["overrides"]["train.seed"]), "experiment": result["experiment"]}
        | {"stages": result["stages"]}
        for result in sorted(results, key=lambda result: int(result["overrides"]["train.seed"]))
    ]
    return {"seeds": seed_values, "trials": trials, "summary": summary}
