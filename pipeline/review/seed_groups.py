"""Seed groups: the recorded runs of one configuration that differ only in ``train.seed``.

A run is what a revision's ``dvc.lock`` and evaluate metrics record: a commit's, the workspace's,
or a DVC experiment's (flow runs, sweep trials, ``python -m flows seeds``). Its *configuration* is
everything that decides its results except the seed: each stage's command, the hashes of the
stages' source deps (code, the dataset spec: not other stages' outputs) and every param the stages
record, less ``train.seed`` and the ``review`` section. A revision's group is its own run plus,
for each other seed, the newest experiment of the same configuration. Two revisions of the same
configuration (a change to a comment, a fresh clone reproduced on another CPU) share its runs.
:class:`Groups` holds a review's two sides and compares them, metric by metric.

Reads git and DVC's experiment refs only: no DVC remote, no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.core.paths import Paths
from pipeline.review.metrics import headline_metrics, per_class_scores, run_metrics
from pipeline.review.statistics import Difference, Summary, difference, higher_is_better, summarize

if TYPE_CHECKING:
    from dvc.repo import Repo

IGNORED_PARAMS = ("train.seed", "review")  # no stage's results depend on them (the seed is the noise)


@dataclass(frozen=True)
class Run:
    """One recorded run: where it is (``label``), its seed, configuration and scores."""

    label: str  # "workspace", a commit's short hash, or an experiment's name
    seed: int | None
    configuration: str
    metrics: dict[str, float]  # headline metrics by dotted name (``test.accuracy``)
    classes: dict[str, float] = field(default_factory=dict)  # test F1 by class name
    time: int = 0  # commit time: the newest experiment of a seed wins


def configuration_of(lock: Mapping[str, Any], pipeline: Iterable[str] | None = None) -> str:
    """A short hash of what decides a run's results except its seed (see the module's docstring):
    of the stages named in ``pipeline`` (dvc.yaml's), where ``dvc.lock`` keeps stale ones too."""
    stages = lock.get("stages") or {}
    if pipeline is not None:
        stages = {name: stage for name, stage in stages.items() if name in set(pipeline)}
    produced = [out["path"] for stage in stages.values() for out in stage.get("outs", [])]
    sources, params = [], {}
    for name, stage in sorted(stages.items()):
        sources.append((name, "cmd", str(stage.get("cmd"))))
        for dep in stage.get("deps", []):
            path = dep["path"]
            if not any(_overlap(path, out) for out in produced):  # `models` holds train's outputs
                sources.append((name, path, str(dep.get("md5"))))
        for values in (stage.get("params") or {}).values():
            params |= _flat(values)
    kept = {key: value for key, value in params.items() if not _ignored(key)}
    text = json.dumps([sorted(sources), sorted(kept.items())], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def seed_of(lock: Mapping[str, Any]) -> int | None:
    train = ((lock.get("stages") or {}).get("train") or {}).get("params") or {}
    for values in train.values():
        seed = (values.get("train") or {}).get("seed")
        if isinstance(seed, int):
            return seed
    return None


def run_from(
    label: str,
    lock_text: str,
    metrics_text: str,
    classes_text: str | None,
    time: int = 0,
    dvc_yaml_text: str | None = None,
    train_metrics_text: str | None = None,
) -> Run:
    """A :class:`Run` from the texts of its ``dvc.lock``, metrics JSON, per-class JSON, dvc.yaml and
    train's metrics JSON."""
    lock = yaml.safe_load(lock_text) or {}
    kept_epoch = json.loads(train_metrics_text) if train_metrics_text else None
    metrics = run_metrics(json.loads(metrics_text), kept_epoch)
    table = json.loads(classes_text) if classes_text else None
    classes = {
        name: float(scores["f1"])
        for name, scores in per_class_scores(table, metrics).items()
        if isinstance(scores, Mapping) and "f1" in scores
    }
    pipeline = (yaml.safe_load(dvc_yaml_text) or {}).get("stages") if dvc_yaml_text else None
    configuration = configuration_of(lock, pipeline)
    return Run(label, seed_of(lock), configuration, headline_metrics(metrics), classes, time)


def workspace_run(paths: Paths) -> Run | None:
    """The workspace's run, or None before ``dvc repro`` has written one."""
    lock, metrics, classes, dvc_yaml, trained = (_read_file(path) for path in _files(paths))
    if lock is None or metrics is None:
        return None
    return run_from("workspace", lock, metrics, classes, dvc_yaml_text=dvc_yaml, train_metrics_text=trained)


def revision_run(repo: Repo, paths: Paths, rev: str, label: str | None = None) -> Run | None:
    """The run committed at ``rev`` (a commit, or an experiment's commit), or None where it has none."""
    sha = repo.scm.resolve_rev(rev)
    fs = repo.scm.get_fs(sha)
    texts = [_read(fs, path.relative_to(paths.root).as_posix()) for path in _files(paths)]
    lock, metrics, classes, dvc_yaml, trained = texts
    if lock is None or metrics is None:
        return None
    try:
        time = repo.scm.resolve_commit(sha).commit_time
    except Exception:  # noqa: BLE001  (the order of experiments only)
        time = 0
    return run_from(label or sha[:7], lock, metrics, classes, time, dvc_yaml, trained)


def experiment_runs(repo: Repo, paths: Paths) -> list[Run]:
    """Every DVC experiment of the project that recorded a run, by experiment name."""
    from dvc.repo.experiments.utils import exp_refs

    runs = []
    for ref in exp_refs(repo.scm):
        sha = repo.scm.get_ref(str(ref))
        if sha and (run := revision_run(repo, paths, sha, label=ref.name)) is not None:
            runs.append(run)
    return runs


def group_of(own: Run, candidates: Iterable[Run]) -> list[Run]:
    """``own`` and, for each other seed, the newest candidate of its configuration; by seed."""
    members, seeds = [own], {own.seed}
    for run in sorted(candidates, key=lambda run: (-run.time, run.label)):
        if run.configuration == own.configuration and run.seed is not None and run.seed not in seeds:
            members.append(run)
            seeds.add(run.seed)
    return sorted(members, key=lambda run: (run.seed is None, run.seed or 0, run.label))


@dataclass(frozen=True)
class MetricComparison:
    name: str
    base: Summary | None
    new: Summary | None
    difference: Difference | None


def compare_groups(
    base: Sequence[Run], new: Sequence[Run], scores: str = "metrics", same_configuration: bool = False
) -> list[MetricComparison]:
    """Each metric (``scores="classes"``: each class's F1) of both groups: summaries and difference.

    ``same_configuration``: both sides are one configuration, so no difference is the change's: it
    is within seed noise (the machine's or the seed's) whatever the interval says."""
    old_values, new_values = _values(base, scores), _values(new, scores)
    comparisons = []
    for name in sorted(old_values.keys() | new_values.keys()):
        old, now = old_values.get(name, []), new_values.get(name, [])
        diff = None
        if old and now:
            better = higher_is_better(name) if scores == "metrics" else True
            diff = difference(old, now, higher_better=better)
            if same_configuration and diff.verdict != "no change":
                diff = replace(diff, verdict="within seed noise", method="same configuration")
        comparisons.append(
            MetricComparison(name, summarize(old) if old else None, summarize(now) if now else None, diff)
        )
    return comparisons


@dataclass(frozen=True)
class Groups:
    """Both sides' seed groups (each side's own run first, then other seeds of its configuration)."""

    base: list[Run]
    new: list[Run]

    @property
    def same_configuration(self) -> bool:
        return self.base[0].configuration == self.new[0].configuration

    @property
    def seeded(self) -> bool:
        """Either side has more than one run: the groups, not the two runs, are compared."""
        return max(len(self.base), len(self.new)) > 1

    @cached_property
    def metrics(self) -> list[MetricComparison]:
        """Each headline metric compared, once (the gate and the table both read it)."""
        return compare_groups(self.base, self.new, same_configuration=self.same_configuration)

    @cached_property
    def classes(self) -> list[MetricComparison]:
        return compare_groups(
            self.base, self.new, scores="classes", same_configuration=self.same_configuration
        )

    def of(self, metric: str) -> MetricComparison | None:
        return next((row for row in self.metrics if row.name == metric), None)


def seeds_line(runs: Sequence[Run]) -> str:
    """``42 (workspace), 43 (exp-1a2b3), 44 (exp-4c5d6)``."""
    return ", ".join(f"{run.seed if run.seed is not None else '?'} ({run.label})" for run in runs)


def _values(runs: Sequence[Run], scores: str) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for run in runs:
        for name, value in getattr(run, scores).items():
            values.setdefault(name, []).append(value)
    return values


def _flat(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, Mapping):
        return {prefix.rstrip("."): values}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat |= _flat(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value}
    return flat


def _overlap(path: str, out: str) -> bool:
    return path == out or path.startswith(f"{out}/") or out.startswith(f"{path}/")


def _ignored(key: str) -> bool:
    return any(key == ignored or key.startswith(f"{ignored}.") for ignored in IGNORED_PARAMS)


def _files(paths: Paths) -> tuple[Path, Path, Path, Path, Path]:
    return (
        paths.root / "dvc.lock",
        paths.metrics_json,
        paths.per_class_json,
        paths.root / "dvc.yaml",
        paths.train_metrics_json,
    )


def _read_file(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def _read(fs: Any, path: str) -> str | None:
    try:
        return fs.read_text(path) if fs.exists(path) else None
    except (OSError, UnicodeDecodeError):
        return None
