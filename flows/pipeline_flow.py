"""The Prefect flow ``fashion-pipeline``: the stages of ``dvc.yaml``, one task each, in a workspace.

Decisions:

- **One way to run.** Every run happens in a workspace made from git (:mod:`flows.workspace`), with
  the semantics of ``dvc exp run --temp``: the checkout's HEAD (or ``rev``) plus its uncommitted
  changes, ``overrides`` written into that workspace's ``params.yaml``, the result recorded as a
  DVC experiment. The checkout is never written during a run, so a ``dvc repro`` there may run at
  the same time; ``apply`` brings the experiment in at the end (``dvc exp apply``). With ``source``
  (a git URL) the same run needs no checkout at all: what a worker on another machine does.
- **DVC decides what runs.** Each task reproduces its DVC stage (:mod:`flows.stage`), in the order of
  DVC's graph of ``dvc.yaml``. A stage whose code, data and params are unchanged ends in a
  ``Completed`` state named ``Skipped``, its task run named ``<stage> (skipped)`` so that the run
  graph shows it at a glance; one restored from DVC's run cache ends in a state named ``Cached``.
  Prefect's own result caching is off.
- **What the UI shows.** Artifacts: the metrics against the commit the run started from, a table of
  per-class scores, the figures (drawn in the artifact), and while a stage trains, a progress
  artifact of its epochs (:mod:`flows.reports`).
- **Pushing is asked for**, as in DVC: ``push`` sends the data to the DVC remote and the experiment
  to the git remote (the nightly deployment does). Where no DVC remote is set, a push could send only
  the git ref while the model stays in this machine's cache (a worker's, for the nightly): so, as
  ``dvc push`` does, the run fails, before any stage runs, in one line that says how to set one. The
  metrics artifact says what the push sent where.
- A failing stage fails its task and the flow at once, naming the stage and quoting its error lines.
  Prefect retries no stage: ingest retries its own downloads (``ingest.retries``), and a failure
  that outlives those (a bad param, a dead mirror list) fails the same way again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows import reports, workspace
from flows.promote_flow import fashion_promote
from flows.reproduce import reproduce_in
from pipeline.core.params import DEFAULT_PARAMS_PATH, parse_raw_params, read_params_text
from pipeline.core.paths import Paths

METRICS_ARTIFACT = "fashion-metrics"
PLOTS_ARTIFACT = "fashion-plots"
PER_CLASS_ARTIFACT = "fashion-per-class"


@flow(name="fashion-pipeline")
def fashion_pipeline(
    overrides: dict[str, Any] | None = None,
    rev: str | None = None,
    source: str | None = None,
    apply: bool = False,
    push: bool = False,
    keep_workspace: bool = False,
    project_dir: str | None = ".",
    promote_to: str | None = None,
) -> dict[str, Any]:
    """Reproduce the pipeline with ``overrides`` (``{"train.epochs": 3}``) in a workspace of its own.

    ``project_dir``: the checkout on this machine the run starts from and records its experiment in
    (``None`` on a worker without one). ``rev``: the commit, branch or tag to run (default: the
    checkout's HEAD plus its uncommitted changes). ``source``: a git URL to clone instead of the
    checkout. ``apply``: ``dvc exp apply`` the result to the checkout, unless it changed meanwhile.
    ``push``: push data and experiment to the DVC and git remotes (no DVC remote: the run fails
    before any stage). ``keep_workspace``: keep a failed run's workspace for debugging.
    ``promote_to``: then run the result's seed group and give its model this registry stage if it
    beats the stage's version beyond seed noise (:mod:`flows.promote_flow`; needs ``push``).

    Returns each stage's outcome (``ran``, ``skipped``, ``cached``), the experiment and the commit.
    """
    logger = get_run_logger()
    project = Path(project_dir).resolve() if project_dir else None
    if project is None and not (source and push):
        raise ValueError(
            "a run without project_dir needs source (a git URL) and push=True, or its result is lost"
        )
    if apply and project is None:
        raise ValueError("apply needs project_dir: the checkout to apply the experiment to")
    if promote_to and not push:
        raise ValueError("promote_to needs push=True: a version's model must be in the DVC remote")
    changes = workspace.uncommitted_changes(project) if project and not (rev or source) else None
    started_as = workspace.checkout_state(project) if apply else None
    name = flow_run.name or "run"
    with workspace.isolated(
        source or project,
        rev,
        name=name,
        log=logger,
        changes=changes,
        share_with=project,
        keep_on_failure=keep_workspace,
        # before any stage: a push without a DVC remote would leave the model behind
        needs_remote=("push=True", "run with push=False") if push else None,
    ) as made:
        paths = Paths(made.root)
        start = reports.read_metrics(paths)
        # Parsed here (an unknown key stops the run); validated once, by ingest, as DVC runs it.
        requested = parse_raw_params(
            read_params_text(made.root / DEFAULT_PARAMS_PATH), _params_source(rev), overrides
        )
        outcomes, experiment, _ = reproduce_in(made.root, requested)
        if experiment and project:
            workspace.share_experiment(made.root, experiment, project)
        pushed = None
        if push:
            git_remote = source or (workspace.git_remote_url(project) if project else None)
            pushed = workspace.push_results(made.root, experiment, git_remote, logger)
        publish_artifacts(paths, start, experiment, made.commit, project, pushed)
        if promote_to:  # in the workspace: its origin is where the tags go
            promoted = fashion_promote(
                stage=promote_to,
                rev=None if experiment else made.commit,
                exp=experiment,
                project_dir=str(made.root),
                in_process=True,
                return_state=True,
            )
            if not promoted.is_completed():
                raise RuntimeError(f"promoting to {promote_to} failed: {promoted.message}")
    logger.info("stages: %s", ", ".join(f"{name} {outcome}" for name, outcome in outcomes.items()))
    if apply and experiment:
        workspace.apply_experiment(project, experiment, started_as)
        logger.info("applied %s to %s: review it, then commit", experiment, project)
    return {"stages": outcomes, "experiment": experiment, "commit": made.commit}


def _params_source(rev: str | None) -> str:
    return f"{DEFAULT_PARAMS_PATH} at {rev}" if rev else str(DEFAULT_PARAMS_PATH)


def publish_artifacts(
    paths: Paths,
    start: dict[str, Any] | None,
    experiment: str | None,
    commit: str,
    project: Path | None = None,
    pushed: workspace.Pushed | None = None,
) -> None:
    """The metrics table (against the commit the run started from, and against the seed spread of
    its configuration where ``project``'s experiments know one) with what the push sent where
    (``pushed``), the per-class scores and the figures, in the Prefect UI."""
    metrics = reports.read_metrics(paths)
    this_run, spread = reports.seed_spread(paths.root, project)
    create_markdown_artifact(
        reports.metrics_markdown(
            metrics,
            start,
            experiment,
            f"Commit {commit[:7]}",
            spread=spread,
            this_run=this_run,
            pushed=pushed.sent if pushed else (),
            warnings=[pushed.warning] if pushed and pushed.warning else (),
        ),
        key=METRICS_ARTIFACT,
        description="Validation and test accuracy and loss, against the commit the run started from",
    )
    create_table_artifact(
        reports.per_class_table(paths.per_class_json),
        key=PER_CLASS_ARTIFACT,
        description="Precision, recall and F1 of each class on the test set",
    )
    create_markdown_artifact(
        reports.plots_markdown(paths, experiment),
        key=PLOTS_ARTIFACT,
        description="Learning curves, confusion matrix, per-class F1",
    )
