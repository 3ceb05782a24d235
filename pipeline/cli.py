"""``python -m pipeline <stage>``: the thin command line that ``dvc.yaml`` and the Prefect flow run.

Each command validates the whole ``params.yaml`` first, then runs one stage on the paths in
:mod:`pipeline.paths`. Stage modules are imported on demand so ingest and preprocess never load
TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from pipeline import logs
from pipeline.errors import PipelineError
from pipeline.params import DEFAULT_PARAMS_PATH, Params, load_params
from pipeline.paths import Paths

log = logging.getLogger("pipeline")

STAGES = ("ingest", "preprocess", "train", "evaluate")


def run_stage(stage: str, params: Params, paths: Paths) -> None:
    """Run one stage with its section of ``params``."""
    if stage == "ingest":
        from pipeline import ingest

        ingest.ingest(
            ingest.resolve_sources(params.ingest.sources),
            params.ingest.sha256,
            paths.raw_dir,
            timeout_s=params.ingest.timeout_s,
            retries=params.ingest.retries,
        )
    elif stage == "preprocess":
        from pipeline import preprocess

        preprocess.run(paths, **params.preprocess.model_dump())
    elif stage == "train":
        from pipeline import train

        train.run(paths, params.train)
    elif stage == "evaluate":
        from pipeline import evaluate

        evaluate.run(paths, params.evaluate)
    else:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--params", type=Path, default=DEFAULT_PARAMS_PATH, help="params file (default: params.yaml)"
    )
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        commands.add_parser(stage, parents=[common], help=f"run the {stage} stage")
    review = commands.add_parser(
        "report",
        parents=[common],
        help="Markdown review of the workspace's metrics, params and plots against a git revision",
    )
    review.add_argument("--base", default="main", help="git revision to compare with (default: main)")
    review.add_argument("--output", type=Path, help="write the Markdown here (default: stdout)")
    review.add_argument(
        "--image-base-url", help="URL prefix for the PNG links (default: paths relative to --output)"
    )
    args = parser.parse_args(argv)

    try:
        logs.configure()
    except logs.FlowGone as exc:
        log.error("%s not run: %s", args.command, exc)
        return 1
    # SIGTERM (a cancelled run, `kill`) unwinds like Ctrl-C, so temporary files go and outputs stay whole.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        params = load_params(args.params)
        if args.command == "report":
            from pipeline import report

            report.run(
                Paths(),
                params.review,
                base=args.base,
                output=args.output,
                image_base_url=args.image_base_url,
            )
        else:
            run_stage(args.command, params, Paths())
    except (PipelineError, FileNotFoundError) as exc:
        log.error("%s failed: %s", args.command, exc)
        return 1
    except Exception as exc:  # a bug or an unforeseen failure: the traceback, and its gist on line one
        log.error("%s failed: %s: %s", args.command, type(exc).__name__, exc, exc_info=True)
        return 1
    except KeyboardInterrupt:
        log.error("%s interrupted before it finished; nothing it wrote is left half-written", args.command)
        return 130
    return 0
