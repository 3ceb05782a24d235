"""Run the pipeline flow once, sweep params or seeds on Dask, or schedule it on a cron (``python -m flows``).

Every run happens in a workspace of its own made from git, as ``dvc exp run --temp`` does, and is
recorded as a DVC experiment; the checkout is never written unless ``--apply`` asks.

python -m flows run --override train.epochs=3             # HEAD + uncommitted changes, as an experiment
python -m flows run --rev main --apply                    # a commit; then dvc exp apply the result
python -m flows run --source https://git.example/p.git --push   # no checkout needed: what a worker does
python -m flows sweep -S train.epochs=10,20 --workers 2   # every combination, as trials on Dask
python -m flows seeds --seeds 5 --override train.epochs=5 # one configuration over 5 seeds: its spread
python -m flows schedule --cron "0 2 * * *"               # runs of the current branch, on a schedule
python -m flows promote --rev main --stage prod           # register main's model; prod only beyond seed noise
python -m flows classify incoming/ --stage prod           # every image under a folder, into predictions.csv
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.params_update import key_value, trial_overrides
from pipeline.core.errors import PipelineError
from pipeline.core.params import (
    DEFAULT_PARAMS_PATH,
    leaf_values,
    parse_raw_params,
    read_params_text,
    read_raw_params,
    validate_params,
)

DEFAULT_CRON = "0 2 * * *"


def override_argument(text: str) -> tuple[str, str]:
    try:
        return key_value(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def overrides_from(params_file: Path | None, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The values of ``params_file`` (only the keys it holds), then each ``--override``, as overrides."""
    overrides: dict[str, Any] = {}
    if params_file is not None:
        overrides = leaf_values(read_raw_params(params_file), source=str(params_file))
    return {**overrides, **dict(pairs)}


def check_params(project: Path, rev: str | None, overrides: dict[str, Any], origins: dict[str, str]) -> None:
    """The params a run of ``project`` would use (the checkout's, or ``rev``'s) plus ``overrides``,
    validated; :class:`PipelineError` names the key and where its value came from (``origins``)."""
    if rev:
        from flows.workspace import committed_params, resolve_commit  # DVC's import: only with --rev

        text, source = (
            committed_params(project, resolve_commit(project, rev)),
            f"{DEFAULT_PARAMS_PATH} at {rev}",
        )
    else:
        path = project / DEFAULT_PARAMS_PATH
        text, source = read_params_text(path), str(DEFAULT_PARAMS_PATH)
    origins = {key: origins.get(key, "--override") for key in overrides}
    validate_params(parse_raw_params(text, source, overrides, origins), source=source, overridden=origins)


def current_branch(project: Path) -> str:
    """The branch checked out in ``project`` (``HEAD`` when detached)."""
    result = subprocess.run(
        ["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=project, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-dir", type=Path, default=Path("."), help="the DVC project (default: .)")
    common.add_argument(
        "--rev", help="the commit, branch or tag to run (default: HEAD plus uncommitted changes)"
    )
    common.add_argument(
        "--source",
        metavar="GIT_URL",
        help="clone this git remote instead of the checkout (workers on other machines)",
    )
    common.add_argument(
        "--push",
        action="store_true",
        help="push data and experiments to the DVC and git remotes (as dvc push: "
        "without a DVC remote, the run fails before it starts)",
    )
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    changed = argparse.ArgumentParser(add_help=False)
    changed.add_argument(
        "--override",
        type=override_argument,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a param to change for this run, e.g. train.epochs=3 (repeatable)",
    )
    changed.add_argument(
        "--params",
        type=Path,
        metavar="FILE",
        help="use FILE's values as overrides: only the keys it holds; --override wins over it",
    )
    on_dask = argparse.ArgumentParser(add_help=False)
    where = on_dask.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="local Dask worker processes (default: what the cores and memory allow)"
    )
    where.add_argument("--dask-address", metavar="ADDRESS", help="a running Dask scheduler, tcp://host:8786")
    where.add_argument(
        "--in-process", action="store_true", help="no Dask: the trials one after another in this process"
    )
    run = commands.add_parser("run", parents=[common, changed], help="run the flow once, now")
    run.add_argument(
        "--apply",
        action="store_true",
        help="dvc exp apply the result to the checkout, unless it changed meanwhile",
    )
    run.add_argument(
        "--keep-workspace", action="store_true", help="keep a failed run's workspace for debugging"
    )
    sweep = commands.add_parser(
        "sweep", parents=[common, changed, on_dask], help="run every combination of params as trials on Dask"
    )
    sweep.add_argument(
        "-S",
        "--set-param",
        dest="grid",
        action="append",
        required=True,
        metavar="KEY=VALUES",
        help="as for dvc exp run --queue -S: train.epochs=10,20, 'train.optimizer=choice(adam,sgd)', "
        "train.seed=range(1,4) (repeatable; every combination is a trial)",
    )
    sweep.add_argument(
        "--apply-best", action="store_true", help="dvc exp apply the best trial to the checkout"
    )
    seeds = commands.add_parser(
        "seeds",
        parents=[common, changed, on_dask],
        help="run one configuration over N seeds as trials on Dask; the spread of its metrics",
    )
    seeds.add_argument(
        "--seeds",
        type=positive,
        metavar="N",
        help="how many: train.seed and the N-1 after it (default: review.seeds of params.yaml)",
    )
    promote = commands.add_parser(
        "promote",
        parents=[on_dask],
        help="register a commit's or experiment's model; assign a stage only beyond seed noise",
    )
    promote.add_argument("--project-dir", type=Path, default=Path("."), help="the DVC project (default: .)")
    candidate = promote.add_mutually_exclusive_group()
    candidate.add_argument("--rev", help="the commit, branch or tag whose model to promote (default: HEAD)")
    candidate.add_argument("--exp", metavar="NAME", help="the DVC experiment whose model to promote")
    promote.add_argument(
        "--stage", default="staging", help="the registry stage: dev, staging or prod (default: staging)"
    )
    promote.add_argument(
        "--seeds",
        type=positive,
        metavar="N",
        help="each seed group's size (default: review.seeds of the candidate's params.yaml)",
    )
    promote.add_argument("--force", action="store_true", help="assign even against the rule (recorded)")
    promote.add_argument("--dry-run", action="store_true", help="decide and say why; tag nothing")
    classify = commands.add_parser(
        "classify", help="classify every image under a folder with a stage's model, into a CSV"
    )
    classify.add_argument("folder", type=Path, metavar="FOLDER", help="the images, found recursively")
    classify.add_argument("--project-dir", type=Path, default=Path("."), help="the DVC project (default: .)")
    model = classify.add_mutually_exclusive_group()
    model.add_argument("--stage", default="prod", help="the registry stage to use (default: prod)")
    model.add_argument("--model", type=Path, help="a .keras file instead of the registry's")
    classify.add_argument(
        "--out", type=Path, default=Path("predictions.csv"), help="the CSV (default: predictions.csv)"
    )
    classify.add_argument(
        "--chunk-files", type=positive, default=256, metavar="N", help="files per task (default: 256)"
    )
    on_cluster = classify.add_mutually_exclusive_group()
    on_cluster.add_argument("--workers", type=positive, help="local Dask worker processes (default: none)")
    on_cluster.add_argument(
        "--dask-address", metavar="ADDRESS", help="a running Dask scheduler whose workers see FOLDER"
    )
    schedule = commands.add_parser(
        "schedule",
        aliases=["serve"],  # its name until 2026-12: it read like serving the model
        parents=[common],
        help="run a branch on a cron schedule until stopped (Prefect's flow.serve)",
    )
    schedule.add_argument("--name", default="local", help="deployment name (default: local)")
    schedule.add_argument("--cron", default=DEFAULT_CRON, help=f"schedule (default: {DEFAULT_CRON!r})")
    args = parser.parse_args(argv)
    if args.command == "serve":
        print(f"{parser.prog} serve is deprecated: use {parser.prog} schedule", file=sys.stderr)
        args.command = "schedule"

    project = args.project_dir.resolve()
    overrides: dict[str, Any] = {}
    try:  # every param before any server starts: one line, exit 2
        if args.command in ("run", "sweep", "seeds"):
            overrides = overrides_from(args.params, args.override)
            origins = dict.fromkeys((key for key, _ in args.override), "--override")
            origins = {**dict.fromkeys(set(overrides) - set(origins), str(args.params)), **origins}
            if not args.source:
                check_params(project, args.rev, overrides, origins)
        if args.command == "sweep" and not args.source:
            for number, trial in enumerate(trial_overrides(args.grid), start=1):
                origins |= dict.fromkeys(trial, f"-S (trial {number})")
                check_params(project, args.rev, {**overrides, **trial}, origins)
        if args.command == "promote":
            check_promotion(project, args)
        if args.command == "classify":
            check_classify(project, args)
        if args.command in ("run", "sweep", "seeds") and args.push and not (args.rev or args.source):
            # The checkout's DVC config is the run's; another revision's the flow checks in its workspace.
            from dvc.exceptions import DvcException  # DVC's import: only with --push

            from flows.workspace import require_dvc_remote

            try:
                require_dvc_remote(project, "--push", "run without --push")
            except DvcException as exc:
                raise RuntimeError(f"--push: {project}: {exc}") from None
    except (PipelineError, RuntimeError, OSError) as exc:
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
    if args.command in ("run", "sweep", "seeds") and args.params:
        print(
            f"{args.params}: its values for {', '.join(sorted(overrides))} are used as overrides",
            file=sys.stderr,
        )

    from flows.api import ensure_api  # Prefect's import takes seconds: after the checks

    try:
        ensure_api(list(sys.argv[1:] if argv is None else argv))
    except RuntimeError as exc:
        parser.exit(1, f"{parser.prog} {args.command}: error: {exc}\n")
    return run_command(args, project, overrides)


def check_promotion(project: Path, args: argparse.Namespace) -> None:
    """The stage, the declared model, the candidate and (to tag) the DVC remote, before any server."""
    from flows import workspace
    from flows.promote_flow import candidate_of, require_trained
    from pipeline import registry

    registry.check_stage(args.stage)
    model = registry.declared_model(project)
    require_trained(project, candidate_of(project, args.rev, args.exp), model.path)
    if not args.dry_run:
        workspace.require_dvc_remote(project, "promote", "set one and push, or use --dry-run")


def check_classify(project: Path, args: argparse.Namespace) -> None:
    """The folder, and the model file or the stage and the declared model, before any server."""
    from pipeline import registry

    if not args.folder.is_dir():
        raise RuntimeError(f"{args.folder}: no such folder")
    if args.model:
        if not args.model.is_file():
            raise RuntimeError(f"{args.model}: no such model file")
        return
    registry.check_stage(args.stage)
    registry.declared_model(project)


def run_command(args: argparse.Namespace, project: Path, overrides: dict[str, Any]) -> int:
    """Run, sweep, seeds, promote, classify or schedule, against the Prefect API of this command."""
    from flows.pipeline_flow import fashion_pipeline

    if args.command == "promote":
        from flows.promote_flow import fashion_promote

        state = fashion_promote(
            stage=args.stage,
            rev=args.rev,
            exp=args.exp,
            force=args.force,
            dry_run=args.dry_run,
            seeds=args.seeds,
            workers=args.workers,
            dask_address=args.dask_address,
            in_process=args.in_process,
            project_dir=str(project),
            return_state=True,
        )
        return 0 if state.is_completed() else 1
    if args.command == "classify":
        from flows.classify_flow import fashion_classify

        state = fashion_classify(
            folder=str(args.folder),
            out=str(args.out),
            stage=args.stage,
            model=str(args.model) if args.model else None,
            chunk_files=args.chunk_files,
            workers=args.workers,
            dask_address=args.dask_address,
            project_dir=str(project),
            return_state=True,
        )
        return 0 if state.is_completed() else 1

    where = {"rev": args.rev, "source": args.source, "push": args.push, "project_dir": str(project)}
    if args.command in ("sweep", "seeds"):
        from flows.seeds_flow import fashion_seeds
        from flows.sweep_flow import fashion_sweep

        trials = {"overrides": overrides, "workers": args.workers, "dask_address": args.dask_address}
        trials |= {"in_process": args.in_process, **where, "return_state": True}
        if args.command == "sweep":
            state = fashion_sweep(grid=args.grid, apply_best=args.apply_best, **trials)
        else:
            state = fashion_seeds(seeds=args.seeds, **trials)
        return 0 if state.is_completed() else 1
    if args.command == "schedule":
        parameters = {
            "rev": args.rev or current_branch(project),
            "source": args.source,
            "push": args.push,
            "project_dir": str(project),
        }
        # global_limit=1: one run at a time, as in prefect.yaml; each still has a workspace of its own.
        fashion_pipeline.serve(name=args.name, cron=args.cron, parameters=parameters, global_limit=1)
        return 0
    state = fashion_pipeline(
        overrides=overrides, apply=args.apply, keep_workspace=args.keep_workspace, **where, return_state=True
    )
    return 0 if state.is_completed() else 1
