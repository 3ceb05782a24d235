"""Run the pipeline flow once, or serve it on a cron without a work pool (``python -m flows``).

python -m flows run --override train.epochs=3     # one run now
python -m flows serve --cron "0 2 * * *"          # a scheduled deployment served by this process
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from flows.pipeline_flow import fashion_pipeline

DEFAULT_CRON = "0 2 * * *"


def key_value(text: str) -> tuple[str, str]:
    """``train.epochs=3`` -> ``("train.epochs", "3")``; the flow parses the value as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value.strip()


def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-dir", type=Path, default=Path("."), help="the DVC project (default: .)")
    common.add_argument("--params", default="params.yaml", help="params file, relative to --project-dir")
    parser = argparse.ArgumentParser(prog="python -m flows", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", parents=[common], help="run the flow once, now")
    run.add_argument(
        "--override",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a param to change for this run, e.g. train.epochs=3 (repeatable)",
    )
    serve = commands.add_parser("serve", parents=[common], help="serve the flow on a schedule until stopped")
    serve.add_argument("--name", default="local", help="deployment name (default: local)")
    serve.add_argument("--cron", default=DEFAULT_CRON, help=f"schedule (default: {DEFAULT_CRON!r})")
    args = parser.parse_args(argv)

    parameters = {"params_path": args.params, "project_dir": str(args.project_dir.resolve())}
    if args.command == "serve":
        # global_limit=1: never two runs of this deployment at once, as in prefect.yaml.
        fashion_pipeline.serve(name=args.name, cron=args.cron, parameters=parameters, global_limit=1)
        return 0
    state = fashion_pipeline(**parameters, overrides=dict(args.override), return_state=True)
    return 0 if state.is_completed() else 1
