"""``python -m pipeline report``: review a change by its numbers and pictures, in Markdown.

Compares the workspace's ``metrics.json`` and params with a git revision (a PR's base branch), lists
the figures, and applies the regression gate of the ``review`` params section. Where DVC experiments
hold other seeds of either side's configuration (:mod:`pipeline.review.seed_groups`, made by
``python -m flows seeds``), it compares the two seed groups instead of two runs: each side's mean and
spread, the change's 95% interval and a verdict (:mod:`pipeline.review.statistics`), and the gate
(:mod:`pipeline.review.gate`) fails only on a significant drop. DVC reads the base
revision (``dvc metrics diff`` / ``dvc params diff`` see the same values); the builders below are pure
functions of plain dicts, so the Markdown is deterministic: sorted keys, fixed decimals. It runs from
any folder of the project, and refuses an ``--output`` that DVC tracks. Never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import registry
from pipeline.commands.project import enter_project, open_project
from pipeline.core import atomic
from pipeline.core.errors import PipelineError
from pipeline.core.params import ReviewParams
from pipeline.core.paths import Paths
from pipeline.review.gate import GateCheck, gate_checks
from pipeline.review.metrics import MetricRow, metric_rows, per_class_rows, per_class_scores, run_metrics
from pipeline.review.seed_groups import (
    Groups,
    experiment_runs,
    group_of,
    revision_run,
    seeds_line,
    workspace_run,
)
from pipeline.review.statistics import CONFIDENCE
from pipeline.review.tables import cell, group_size, group_table, metric_table, number

log = logging.getLogger(__name__)

MARKER = "<!-- fashion-pipeline review report -->"  # lets a CI job find and update its own comment


class ReportError(PipelineError):
    """The base revision or the workspace has no metrics to compare, or the revision is unknown."""


class GateFailed(PipelineError):
    """The new metrics break a ``review.*`` threshold; the report was still written."""


@dataclass(frozen=True)
class ParamChange:
    name: str
    old: Any
    new: Any


def param_changes(params_diff: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[ParamChange]:
    """Rows of ``dvc params diff``'s ``{file: {key: {"old", "new"}}}`` (``file:key`` off params.yaml)."""
    changes = []
    for file, keys in params_diff.items():
        for key, values in keys.items():
            name = key if file == "params.yaml" else f"{file}:{key}"
            changes.append(ParamChange(name, values.get("old"), values.get("new")))
    return sorted(changes, key=lambda change: change.name)


def build_report(
    *,
    base: str,
    base_commit: str | None,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    params: Sequence[ParamChange],
    checks: Sequence[GateCheck],
    images: Sequence[tuple[str, str]] = (),
    stale_stages: Sequence[str] = (),
    per_class: Sequence[MetricRow] = (),
    groups: Groups | None = None,
) -> str:
    """The whole Markdown report; ``images`` are ``(title, link)`` pairs, ``per_class`` the F1 rows,
    ``groups`` both sides' seed groups where known."""
    lines = _report_lines(
        base, base_commit, old, new, params, checks, images, stale_stages, per_class, groups
    )
    return "\n".join(lines) + "\n"


def _report_lines(
    base: str,
    base_commit: str | None,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    params: Sequence[ParamChange],
    checks: Sequence[GateCheck],
    images: Sequence[tuple[str, str]],
    stale_stages: Sequence[str],
    per_class: Sequence[MetricRow],
    groups: Groups | None,
) -> Iterator[str]:
    commit = f" (`{base_commit[:7]}`)" if base_commit else ""
    yield MARKER
    yield "# Model review"
    yield ""
    yield f"This change (the workspace) against base `{base}`{commit}."
    if stale_stages:
        yield ""
        stages = ", ".join(sorted(stale_stages))
        yield (
            f"> **Warning:** the pipeline is not up to date (`dvc status`: {stages}); "
            "run `dvc repro` so the metrics match the params."
        )
    enabled = [check for check in checks if check.threshold is not None]
    failed = [check for check in enabled if not check.passed]
    if failed:
        yield ""
        yield "**Regression gate failed:** " + "; ".join(check.message for check in failed) + "."

    yield ""
    yield "## Metrics"
    yield ""
    if groups is not None and groups.seeded:
        yield from seed_group_section(groups)
    else:
        yield from metric_table(metric_rows(old, new))
        if groups is not None:
            yield ""
            yield from one_run_a_side(groups, base)
    if per_class and not (groups is not None and groups.seeded):
        yield ""
        yield "<details>"
        yield "<summary>Per-class F1 (test set)</summary>"
        yield ""
        yield from metric_table(per_class, label="Class")
        yield ""
        yield "</details>"

    yield ""
    yield "## Params"
    yield ""
    if params:
        yield "| Param | Base | New |"
        yield "| --- | --- | --- |"
        for change in params:
            yield f"| `{cell(change.name)}` | {cell(_param(change.old))} | {cell(_param(change.new))} |"
    else:
        yield "No params changed."

    yield ""
    yield "## Regression gate"
    yield ""
    if enabled:
        yield "| Check | Threshold | Value | Result |"
        yield "| --- | ---: | ---: | --- |"
        for check in enabled:
            result = "pass" if check.passed else "**FAIL**"
            yield f"| `{check.param}` | {number(check.threshold)} | {number(check.value)} | {result} |"
    else:
        yield "Off: set `review.min_test_accuracy` or `review.max_test_accuracy_drop` in `params.yaml`."

    yield ""
    yield "## Plots"
    yield ""
    yield (
        "Interactive loss, accuracy, confusion-matrix and per-class plots of both revisions: "
        f"`python -m pipeline plots diff {base}` (writes `dvc_plots/index.html`, drawn offline)."
    )
    for title, link in images:
        yield ""
        yield f"### {title}"
        yield ""
        yield f"![{title}]({link})"


def seed_group_section(groups: Groups) -> Iterator[str]:
    """Both seed groups: which runs, then each headline metric's and each class's comparison."""
    yield (
        f"Seed groups: base {group_size(len(groups.base))}: {seeds_line(groups.base)}; "
        f"new {group_size(len(groups.new))}: {seeds_line(groups.new)}."
    )
    if groups.same_configuration:
        yield ""
        yield same_configuration_note(groups)
    yield ""
    yield from group_table(groups.metrics)
    yield ""
    yield (
        f"Mean ± standard deviation (min–max) over the seeds. The change is new minus base with its "
        f"{CONFIDENCE:.0%} interval (Welch's t; against one run, the group's prediction interval): "
        "better or worse only when the interval excludes zero."
    )
    yield ""
    yield "<details>"
    yield "<summary>Per-class F1 (test set)</summary>"
    yield ""
    yield from group_table(groups.classes, label="Class")
    yield ""
    yield "</details>"


def one_run_a_side(groups: Groups, base: str) -> Iterator[str]:
    """What one run a side can and cannot say, and how to get the seed groups."""
    if groups.same_configuration:
        yield same_configuration_note(groups)
        return
    yield (
        "**Seed noise: cannot tell.** One run a side: seeds alone move these numbers, so this table "
        "cannot tell a better model from a lucky seed. Seed groups make the verdict: "
        f"`python -m flows seeds` (the workspace) and `python -m flows seeds --rev {base}`; "
        "the report then compares them."
    )


def same_configuration_note(groups: Groups) -> str:
    """The headline over two sides of one configuration, from the verdicts of the rows below it
    (``groups.metrics`` and ``groups.classes``, which the tables print): "no change" where every row
    says so (the same runs, or equal numbers), else "within seed noise"."""
    verdicts = {
        row.difference.verdict for row in (*groups.metrics, *groups.classes) if row.difference is not None
    }
    same = "Both sides have the same code, data and params but the seed (`dvc.lock`)"
    if verdicts == {"no change"}:
        return f"**No change: the same configuration.** {same}, and the same numbers."
    return (
        f"**Within seed noise: the same configuration.** {same}, so a difference comes from the "
        "machine (other CPU kernels round differently) or the seed, not from the change."
    )


def _param(value: Any) -> str:
    """Values as YAML writes them inline: ``null``, ``true``, ``[16]``, ``adam``."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


# --- I/O: everything above is pure -----------------------------------------------------------------


def run(
    paths: Paths,
    review: ReviewParams,
    *,
    base: str,
    output: Path | None = None,
    image_base_url: str | None = None,
) -> str:
    """Write the report to ``output`` (stdout when ``None``), then raise :class:`GateFailed` if it fails."""
    if output is not None:
        refuse_tracked(paths.root, output)
    compared = read_revisions(paths, base)
    checks = gate_checks(compared.old, compared.new, review, compared.groups)
    link_dir = output.parent if output is not None else Path(".")
    images = [
        (title, image_link(path, paths.root, link_dir, image_base_url))
        for title, path in paths.figures().items()
        if path.is_file()
    ]
    text = build_report(
        base=base,
        base_commit=compared.base_commit,
        old=compared.old,
        new=compared.new,
        params=compared.params,
        checks=checks,
        images=images,
        stale_stages=compared.stale_stages,
        per_class=per_class_rows(compared.old_classes, compared.new_classes),
        groups=compared.groups,
    )
    if output is None:
        print(text, end="")
    else:
        atomic.write_text(output, text)
        log.info("review of the workspace against %s -> %s", base, output)
    failed = [check.message for check in checks if check.threshold is not None and not check.passed]
    if failed:
        where = "above" if output is None else f"in {output}"
        raise GateFailed(f"the report is written ({where}); regression gate failed: " + "; ".join(failed))
    return text


def refuse_tracked(root: Path, output: Path) -> None:
    """Raise :class:`ReportError` when ``output`` is, or lies in, an output of dvc.yaml or a .dvc file."""
    target = (root / output).resolve()
    with open_project(root) as repo:
        tracked = [out for out in repo.index.outs if target.is_relative_to(Path(out.fs_path).resolve())]
    if tracked:
        out = tracked[0]
        raise ReportError(
            f"--output {output}: DVC tracks {out.def_path} ({out.stage.addressing}); write the report "
            "elsewhere (e.g. --output review.md)"
        )


def image_link(path: Path, root: Path, link_dir: Path, base_url: str | None) -> str:
    """``base_url/<repo path>`` when given, else the path relative to the report's folder."""
    if base_url:
        return f"{base_url.rstrip('/')}/{path.relative_to(root).as_posix()}"
    return Path(os.path.relpath(path, link_dir)).as_posix()


@dataclass(frozen=True)
class Revisions:
    """What the report compares, read from the base revision and the workspace."""

    old: dict[str, Any]
    new: dict[str, Any]
    params: list[ParamChange]
    base_commit: str | None
    stale_stages: list[str]
    old_classes: dict[str, Any]  # per-class scores by class name
    new_classes: dict[str, Any]
    groups: Groups | None  # None where a side's run cannot be read as one (before dvc.lock)


def read_revisions(paths: Paths, base: str) -> Revisions:
    """Base and workspace metrics, the params diff, the base commit, stale stages and the per-class
    scores of both, through DVC and git."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from scmrepo.exceptions import SCMError

    files = [paths.metrics_json.absolute(), paths.train_metrics_json.absolute()]
    # DVC names them by their paths in the repository
    target, trained = (path.relative_to(paths.root.absolute()).as_posix() for path in files)
    try:
        with Repo(str(paths.root)) as repo:
            # a registry entry (fashion-classifier#prod, fashion-classifier@v1.2.0) or a git revision
            entry = registry.resolve(paths.root, base)
            base_rev = entry or base
            base_commit = repo.scm.resolve_rev(base_rev)
            shown = repo.metrics.show(
                targets=[str(path) for path in files],
                revs=[base_rev],
                hide_workspace=False,
                on_error="return",
            )
            old = _metrics_of(shown, base_rev, target, trained, f"base {base!r}")
            new = _metrics_of(shown, "workspace", target, trained, "the workspace")
            params = param_changes(repo.params.diff(a_rev=base_rev).get("diff", {}))
            stale = sorted(repo.status())
            base_fs = repo.scm.get_fs(base_commit)
            # where DVCLive keeps them, or, at a revision from before it, where evaluate wrote them
            found = [path for path in (paths.per_class_json, paths.evaluate_live_dir / "per_class.json")]
            found = [path.relative_to(paths.root).as_posix() for path in found]
            found = [path for path in found if base_fs.exists(path)]
            base_table = json.loads(base_fs.read_text(found[0])) if found else None
            groups = read_groups(repo, paths, base_commit)
    except (DvcException, SCMError, registry.RegistryError) as exc:
        raise ReportError(f"cannot compare with {base!r}: {exc}") from None
    new_table = json.loads(paths.per_class_json.read_text()) if paths.per_class_json.is_file() else None
    return Revisions(
        old,
        new,
        params,
        base_commit,
        stale,
        per_class_scores(base_table, old),
        per_class_scores(new_table, new),
        groups,
    )


def read_groups(repo: Any, paths: Paths, base_commit: str) -> Groups | None:
    """The base commit's and the workspace's seed groups, from the project's DVC experiments."""
    base_run, new_run = revision_run(repo, paths, base_commit), workspace_run(paths)
    if base_run is None or new_run is None:
        return None
    experiments = experiment_runs(repo, paths)
    return Groups(group_of(base_run, experiments), group_of(new_run, experiments))


def _metrics_of(shown: Mapping[str, Any], rev: str, target: str, trained: str, where: str) -> dict[str, Any]:
    """The run's metrics at ``rev``: evaluate's ``target`` (required) with train's kept epoch."""
    result = shown.get(rev, {})
    error = result.get("error")
    files = result.get("data", {})
    entry = files.get(target, {})
    error = error or entry.get("error")
    if error is not None or not entry.get("data"):
        missing = error is None or isinstance(error, FileNotFoundError)
        reason = f"{target} is not there" if missing else f"{target}: {error}"
        fix = "run `dvc repro`" if rev == "workspace" else "commit a run (dvc.lock and reports/) there"
        raise ReportError(f"{where} has no metrics: {reason}; {fix}")
    return run_metrics(entry["data"], files.get(trained, {}).get("data"))


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.commands import run_command
    from pipeline.core.params import DEFAULT_PARAMS_PATH, load_params

    parser = argparse.ArgumentParser(
        prog="python -m pipeline report",
        description="Markdown review of the workspace's metrics, params and plots against a git revision.",
    )
    parser.add_argument("--params", type=Path, help="params file (default: the project's params.yaml)")
    parser.add_argument(
        "--base",
        default="main",
        help="git revision, or registry entry (fashion-classifier#prod, fashion-classifier@v1.2.0), to "
        "compare with (default: main)",
    )
    parser.add_argument("--output", type=Path, help="write the Markdown here (default: stdout)")
    parser.add_argument(
        "--image-base-url", help="URL prefix for the PNG links (default: paths relative to --output)"
    )
    args = parser.parse_args(argv)

    def review() -> int:
        params, output = enter_project(args.params, args.output)
        try:
            run(
                Paths(),
                load_params(params or DEFAULT_PARAMS_PATH).review,
                base=args.base,
                output=output,
                image_base_url=args.image_base_url,
            )
        except GateFailed as exc:  # the report is done; the change did not pass
            log.error("%s", exc)
            return 1
        return 0

    return run_command("report", review)


if __name__ == "__main__":
    raise SystemExit(main())
