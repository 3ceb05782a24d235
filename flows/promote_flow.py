"""The Prefect flow ``fashion-promote``: register a commit's or an experiment's model as a new version
and give it a registry stage only beyond seed noise.

- **The groups.** The candidate's seed group and the stage's current version's are run as
  ``fashion-seeds`` (:mod:`flows.seeds_flow`): seeds DVC has run before come from its run cache, so a
  group already run trains nothing. :func:`pipeline.review.promotion.decide` judges them.
- **Never a state others cannot fetch.** The candidate is a commit (or an experiment's), never the
  workspace; its model is pushed to the DVC remote and checked there before any tag is made, and the
  tags go to ``origin`` in one atomic push (:mod:`flows.registry`). A failed push leaves no tag.
- **Lineage.** The version's tag message names the commit and experiment, the params changed since
  the stage's version, the group's test accuracy, the dataset's SHA-256s and the training machine.
- ``--force`` assigns against the rule, recording who forced it; ``--dry-run`` decides and tags nothing.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from flows import workspace
from flows.seeds_flow import fashion_seeds
from pipeline import registry
from pipeline.core.params import parse_raw_params, validate_params
from pipeline.core.paths import Paths
from pipeline.registry import RegistryError
from pipeline.review.promotion import PROMOTION_METRIC, Decision, decide
from pipeline.review.seed_groups import Run, experiment_runs, group_of, revision_run
from pipeline.review.statistics import summarize
from pipeline.review.tables import spread

PROMOTION_ARTIFACT = "fashion-promotion"


@dataclass(frozen=True)
class Candidate:
    """What is promoted: its commit, the rev a workspace fetches it by, and how to name it."""

    commit: str
    rev: str
    experiment: str | None = None

    @property
    def label(self) -> str:
        return f"commit {self.commit[:7]}" + (f" (experiment {self.experiment})" if self.experiment else "")


def candidate_of(project: Path, rev: str | None, exp: str | None) -> Candidate:
    """The commit ``rev`` names, or experiment ``exp``'s; without either, HEAD of a clean checkout."""
    if rev and exp:
        raise RegistryError("name the candidate once: --rev or --exp")
    if exp:
        from dvc.repo.experiments.utils import exp_refs

        with workspace.open_repo(project) as repo:
            refs = [ref for ref in exp_refs(repo.scm) if ref.name == exp]
            if not refs:
                raise RegistryError(f"no experiment {exp!r} in {project}: `dvc exp list` shows them")
            return Candidate(repo.scm.get_ref(str(refs[0])), str(refs[0]), exp)
    if rev is None and workspace.uncommitted_changes(project):
        raise RegistryError(
            "the checkout has uncommitted changes, and a version is a commit: commit them, or name --rev"
        )
    try:
        commit = workspace.resolve_commit(project, rev)
    except workspace.WorkspaceError as exc:
        raise RegistryError(str(exc)) from None
    return Candidate(commit, commit)


def seed_group(project: Path, rev: str, seeds: int | None, **where: Any) -> list[Run]:
    """The seed group of ``rev`` (run where missing: the run cache makes done seeds free)."""
    result = fashion_seeds(seeds=seeds, rev=rev, project_dir=str(project), **where)
    names = {trial["experiment"] for trial in result["trials"] if trial["experiment"]}
    paths = Paths(project)
    with workspace.open_repo(project) as repo:
        runs = [run for run in experiment_runs(repo, paths) if run.label in names]
    first = recorded_run(project, rev) or (runs[0] if runs else None)
    return group_of(first, runs) if first else []


def recorded_run(project: Path, rev: str) -> Run | None:
    """The run ``rev`` records (its ``dvc.lock`` and metrics), or None."""
    with workspace.open_repo(project) as repo:
        return revision_run(repo, Paths(project), rev)


def recorded_group(project: Path, own: Run | None) -> list[Run]:
    """``own`` and the project's experiments of its configuration, one per seed: nothing is run."""
    if own is None:
        return []
    with workspace.open_repo(project) as repo:
        return group_of(own, experiment_runs(repo, Paths(project)))


@flow(name="fashion-promote")
def fashion_promote(
    stage: str = "staging",
    rev: str | None = None,
    exp: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    seeds: int | None = None,
    workers: int | None = None,
    dask_address: str | None = None,
    in_process: bool = False,
    project_dir: str = ".",
) -> dict[str, Any]:
    """Register the model of commit ``rev`` (or experiment ``exp``) and assign it ``stage`` if its
    seed group beats the stage's version beyond seed noise (``force``: anyway; ``dry_run``: only say
    what would happen). Returns the decision and the tags made; a refusal of the registry (a bad
    name, a model missing from the remote, a tag another promotion took) fails it in one line."""
    logger = get_run_logger()
    try:
        return promote(
            Path(project_dir).resolve(),
            stage,
            rev,
            exp,
            force=force,
            dry_run=dry_run,
            seeds=seeds,
            where={"workers": workers, "dask_address": dask_address, "in_process": in_process},
        )
    except (RegistryError, workspace.WorkspaceError) as exc:
        logger.error("%s", exc)
        return Failed(message=str(exc))


def promote(
    project: Path,
    stage: str,
    rev: str | None,
    exp: str | None,
    *,
    force: bool,
    dry_run: bool,
    seeds: int | None,
    where: dict[str, Any],
) -> dict[str, Any]:
    """The flow's work: decide, then push, tag and push the tags (see :func:`fashion_promote`)."""
    logger = get_run_logger()
    registry.check_stage(stage)
    model = registry.declared_model(project)
    candidate = candidate_of(project, rev, exp)
    require_trained(project, candidate, model.path)
    held = registry.stage_version(project, model.name, stage)
    if held and held.commit == candidate.commit and not force:
        reason = f"{stage} already holds {model.name} {held.version}, {candidate.label}: nothing to do"
        logger.info("%s", reason)
        return {"stage": stage, "assigned": False, "reason": reason, "tags": []}
    if held and not dry_run:
        check_in_remote(project, held, model.path, stage)
    review = validate_params(
        parse_raw_params(workspace.committed_params(project, candidate.commit), "params.yaml")
    ).review
    identity = workspace.git_identity(project)
    own, held_own = recorded_run(project, candidate.rev), recorded_run(project, held.commit) if held else None
    if force:  # no comparison to make: the runs already recorded are the lineage's group
        group = recorded_group(project, own)
        why = f"{stage} held {held.version}" if held else f"{stage} held no version"
        decision = Decision(True, f"forced by {identity[0]} <{identity[1]}> ({why})")
    elif held and own and held_own and own.configuration == held_own.configuration:
        group = []  # nothing to run: no difference between them can be the change's
        decision = Decision(
            False, f"the same configuration as {stage}'s {held.version}: no change to promote"
        )
    elif held is None and dry_run:
        group = []
        decision = Decision(True, f"{stage} holds no version yet: its first is assigned without a comparison")
    else:
        group = seed_group(project, candidate.rev, seeds, **where)
        held_group = seed_group(project, held.commit, seeds, **where) if held else None
        decision = decide(held_group, group, stage, review.max_class_f1_drop)
    logger.info("%s: %s", "assign" if decision.assign else "refused", decision.reason)
    tags: list[str] = []
    if decision.assign and not dry_run:
        push_model(project, candidate, model.path)
        lineage = lineage_text(project, model, candidate, group, held, stage, decision)
        tags = registry.record(
            project,
            model.name,
            candidate.commit,
            stage,
            lineage=lineage,
            assignment=f"{stage}: {decision.reason}",
            identity=identity,
            force=force,
        )
        if registry.push(project, tags):
            logger.info("pushed %s to origin", ", ".join(tags))
        else:
            logger.warning("no git remote 'origin': the tags %s stay in %s", ", ".join(tags), project)
    verdict = ("would assign" if dry_run else "assigned") if decision.assign else "not assigned"
    create_markdown_artifact(
        f"## {model.name}: {stage} {verdict}\n\n{candidate.label}\n\n{decision.reason}\n\n"
        + (f"Tags: {', '.join(f'`{tag}`' for tag in tags)}\n" if tags else ""),
        key=PROMOTION_ARTIFACT,
        description=f"Promotion of {candidate.label} to {stage}",
    )
    return {"stage": stage, "assigned": bool(tags), "reason": decision.reason, "tags": tags}


def push_model(project: Path, candidate: Candidate, path: str) -> None:
    """Push ``candidate``'s outputs to the DVC remote (its experiment to ``origin`` too), then check
    that the model is there: the version's tag is made only once anyone can fetch it."""
    workspace.require_dvc_remote(project, "promote", "set one, push, then promote")
    with workspace.open_repo(project) as repo:
        try:
            repo.push(revs=[candidate.commit], workspace=False)
            if candidate.experiment and workspace.git_remote_url(project):
                repo.experiments.push("origin", [candidate.experiment], push_cache=True)
        except Exception as exc:  # noqa: BLE001  (storage libraries raise their own errors)
            raise RegistryError(
                f"pushing {candidate.label}'s model failed, so nothing was tagged: {exc}"
            ) from None
        md5 = model_md5(project, candidate.commit, path)
        if md5 is None or not repo.cloud.get_remote_odb().exists(md5):
            raise RegistryError(
                f"{path} of {candidate.label} is not in the DVC remote (nor in this cache): nothing was "
                f"tagged; reproduce it there (`dvc exp apply` / `git checkout` it, `dvc repro`, `dvc push`)"
            )


def check_in_remote(project: Path, held: registry.Version, path: str, stage: str) -> None:
    """The stage's current version must be fetchable too: its model in the DVC remote."""
    workspace.require_dvc_remote(project, "promote", "set one and push, or use --dry-run")
    md5 = model_md5(project, held.commit, path)
    with workspace.open_repo(project) as repo:
        there = md5 is not None and repo.cloud.get_remote_odb().exists(md5)
    if not there:
        raise RegistryError(
            f"{stage}'s version {held.version} (commit {held.commit[:7]}): its {path} is not in the DVC "
            f"remote, so `dvc artifacts get` cannot fetch it; push it first: `git checkout {held.commit[:7]} "
            "&& dvc push` (from a machine whose cache has it), then promote again"
        )


def require_trained(project: Path, candidate: Candidate, path: str) -> None:
    """``candidate``'s ``dvc.lock`` must record ``path``, trained with the ``params.yaml`` beside it:
    a version's tag fetches the model its lineage describes, never a stale one."""
    stages = _committed_yaml(project, candidate.commit, "dvc.lock").get("stages", {})
    if _out_md5(stages, path) is None:
        raise RegistryError(
            f"{candidate.label} records no {path} in its dvc.lock: nothing was trained there; "
            "`dvc repro`, commit, then promote"
        )
    params = _committed_yaml(project, candidate.commit, "params.yaml")
    stale = sorted(
        f"{section} (dvc.lock {recorded!r}, params.yaml {params.get(section)!r})"
        for stage in stages.values()
        for section, recorded in ((stage.get("params") or {}).get("params.yaml") or {}).items()
        if params.get(section) != recorded
    )
    if stale:
        raise RegistryError(
            f"{candidate.label}'s dvc.lock is stale: its model was trained with other params than its "
            f"params.yaml ({stale[0]}); `dvc repro`, commit, then promote"
        )


def model_md5(project: Path, commit: str, path: str) -> str | None:
    """The md5 ``dvc.lock`` records at ``commit`` for the output ``path``."""
    return _out_md5(_committed_yaml(project, commit, "dvc.lock").get("stages", {}), path)


def _out_md5(stages: dict[str, Any], path: str) -> str | None:
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return out.get("md5")
    return None


def _committed_yaml(project: Path, commit: str, name: str) -> dict[str, Any]:
    """The YAML file ``name`` at ``commit`` ({} where the commit has none)."""
    from ruamel.yaml import YAML

    shown = subprocess.run(
        ["git", "show", f"{commit}:{name}"], cwd=project, capture_output=True, text=True, check=False
    )
    return (YAML(typ="safe").load(shown.stdout) or {}) if shown.returncode == 0 else {}


def lineage_text(
    project: Path,
    model: registry.Artifact,
    candidate: Candidate,
    group: list[Run],
    held: registry.Version | None,
    stage: str,
    decision: Decision,
) -> str:
    """The version's story, for its tag message: where it came from and how good it is."""
    scores = [run.metrics[PROMOTION_METRIC] for run in group if PROMOTION_METRIC in run.metrics]
    lines = [
        f"{model.name} ({model.path}) from {candidate.label}",
        f"{PROMOTION_METRIC} over {len(scores)} seed(s): "
        + (spread(summarize(scores)) if scores else "unknown"),
        f"promoted to {stage}: {decision.reason}",
        "params changed since "
        + (f"{held.version}: " if held else "the start: ")
        + _params_diff(project, held, candidate),
        "dataset sha256: " + _dataset_checksums(project, candidate.commit),
        f"trained on: {registry.trained_on(project, candidate.commit, model.path) or 'not recorded'}",
    ]
    return "\n".join(lines) + "\n"


def _params_diff(project: Path, held: registry.Version | None, candidate: Candidate) -> str:
    if held is None:
        return "none to compare (the stage's first version)"
    with workspace.open_repo(project) as repo:
        diff = repo.params.diff(a_rev=held.commit, b_rev=candidate.commit).get("diff", {})
    changes = [
        f"{key} {values.get('old')!r} -> {values.get('new')!r}"
        for keys in diff.values()
        for key, values in sorted(keys.items())
    ]
    return "; ".join(changes) or "none"


def _dataset_checksums(project: Path, commit: str) -> str:
    spec = Paths(Path(".")).dataset_spec.as_posix()
    checksums = _committed_yaml(project, commit, spec).get("sha256", {})
    return json.dumps(checksums, sort_keys=True) if checksums else "unknown"
