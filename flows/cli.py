"""Run the pipeline flow once, sweep params on Dask, or serve the flow on a cron (``python -m flows``).

python -m flows run --override train.epochs=3             # in the checkout, like dvc exp run -S
python -m flows run --isolated --override train.epochs=3  # in a workspace of its own; checkout untouched
python -m flows sweep -S train.epochs=10,20 --workers 2   # every combination, as isolated trials on Dask
python -m flows serve --cron "0 2 * * *"                  # isolated runs of the current branch, on a schedule
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flows.params_update import key_value
from pipeline.errors import PipelineError
from pipeline.params import leaf_values, read_raw_params

DEFAULT_CRON = "0 2 * * *"


def override_argument(text: str) -> tuple[str, str]:
    try:
        return key_value(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def overrides_from(params_file: Path | None, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The values of ``params_file`` (only the keys it holds), then each ``--override``, as overrides."""
    overrides: dict[str, Any] = {}
    if params_file is not None:
        overrides = leaf_values(read_raw_params(params_file), source=str(params_file))
    return {**overrides, **dict(pairs)}


def current_branch(project: Path) -> str:
    """The branch checked out in ``project`` (``HEAD`` when detached)."""
    result = subprocess.run(
        ["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=project, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-dir", type=Path, default=Path("."), help="the DVC project (default: .)")
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", parents=[common], help="run the flow once, now")
    run.add_argument(
        "--override",
        type=override_argument,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a param to change for this run, e.g. train.epochs=3 (repeatable)",
    )
    run.add_argument(
        "--params",
        type=Path,
        metavar="FILE",
        help="use FILE's values as overrides: only the keys it holds; --override wins over it",
    )
    run.add_argument(
        "--isolated",
        action="store_true",
        help="run in a workspace of its own made from a commit, recorded as a DVC experiment",
    )
    run.add_argument("--rev", help="the commit, branch or tag an isolated run starts from (default: HEAD)")
    run.add_argument(
        "--keep-workspace", action="store_true", help="keep a failed isolated run's workspace for debugging"
    )
    run.add_argument("--no-push", action="store_true", help="do not push data and experiment to the remotes")
    sweep = commands.add_parser(
        "sweep", parents=[common], help="run every combination of params as isolated trials on Dask"
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
    where = sweep.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="local Dask worker processes (default: what the cores and memory allow)"
    )
    where.add_argument("--dask-address", metavar="ADDRESS", help="a running Dask scheduler, tcp://host:8786")
    where.add_argument(
        "--in-process", action="store_true", help="no Dask: the trials one after another in this process"
    )
    sweep.add_argument("--rev", help="the commit, branch or tag every trial starts from (default: HEAD)")
    sweep.add_argument(
        "--source",
        metavar="GIT_URL",
        help="workers clone from this git remote and use the commit's DVC remote, not this checkout",
    )
    sweep.add_argument(
        "--apply-best", action="store_true", help="dvc exp apply the best trial to the checkout"
    )
    serve = commands.add_parser(
        "serve", parents=[common], help="serve isolated runs of a branch on a schedule until stopped"
    )
    serve.add_argument("--name", default="local", help="deployment name (default: local)")
    serve.add_argument("--cron", default=DEFAULT_CRON, help=f"schedule (default: {DEFAULT_CRON!r})")
    serve.add_argument("--rev", help="the branch each run trains (default: the one checked out now)")
    args = parser.parse_args(argv)

    project = args.project_dir.resolve()
    if args.command == "run" and args.rev and not args.isolated:
        parser.error("--rev needs --isolated: a run in the checkout runs what is checked out")
    try:
        overrides = overrides_from(args.params, args.override) if args.command == "run" else {}
    except PipelineError as exc:
        parser.error(str(exc))
    if args.command == "run" and args.params:
        print(
            f"{args.params}: its values for {', '.join(sorted(overrides))} are used as overrides",
            file=sys.stderr,
        )

    from flows.api import ensure_api  # Prefect's import takes seconds: after the checks

    ensure_api(list(sys.argv[1:] if argv is None else argv))
    return run_command(args, project, overrides)


def run_command(args: argparse.Namespace, project: Path, overrides: dict[str, Any]) -> int:
    """Run, sweep or serve, against the Prefect API of this command."""
    from flows.pipeline_flow import fashion_pipeline

    if args.command == "sweep":
        from flows.sweep_flow import fashion_sweep

        state = fashion_sweep(
            grid=args.grid,
            workers=args.workers,
            dask_address=args.dask_address,
            in_process=args.in_process,
            rev=args.rev,
            source=args.source,
            apply_best=args.apply_best,
            project_dir=str(project),
            return_state=True,
        )
        return 0 if state.is_completed() else 1
    if args.command == "serve":
        parameters = {
            "isolated": True,
            "rev": args.rev or current_branch(project),
            "project_dir": str(project),
        }
        # global_limit=1: one run at a time, as in prefect.yaml; each still has a workspace of its own.
        fashion_pipeline.serve(name=args.name, cron=args.cron, parameters=parameters, global_limit=1)
        return 0
    state = fashion_pipeline(
        overrides=overrides,
        isolated=args.isolated,
        rev=args.rev,
        keep_workspace=args.keep_workspace,
        push=not args.no_push,
        project_dir=str(project),
        return_state=True,
    )
    return 0 if state.is_completed() else 1
