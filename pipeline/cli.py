"""``python -m pipeline <stage>``: the thin command line that ``dvc.yaml`` and the Prefect flow run.

Each command validates the whole ``params.yaml`` first, then runs one stage on the paths in
:mod:`pipeline.paths`. Stage modules are imported on demand so ingest and preprocess never load
TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import signal
from collections.abc import Sequence
from pathlib import Path

from pipeline import logs
from pipeline.errors import PipelineError
from pipeline.params import DEFAULT_PARAMS_PATH, Params, load_params
from pipeline.paths import Paths

log = logging.getLogger("pipeline")
DVC_STAGE_ENV = "DVC_STAGE"  # set by DVC for every stage command it runs

STAGES = ("validate", "ingest", "preprocess", "train", "evaluate")


def run_stage(stage: str, params: Params, paths: Paths) -> None:
    """Run one stage: its module's ``main``; imported only now, so no stage loads what it doesn't use."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    with logs.native_start_up_lines_dropped():
        module = importlib.import_module(f"pipeline.{stage}")
    module.main(params, paths)


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
    plots = commands.add_parser(
        "plots",
        help="DVC's plots page, drawn offline: `plots show`, or `plots diff [REV...]` (default: HEAD)",
        description="Runs dvc plots show/diff with vega inlined, so dvc_plots/index.html needs no network.",
    )
    plots.add_argument("action", choices=("show", "diff"), help="as `dvc plots show` or `dvc plots diff`")
    plots.add_argument("revisions", nargs="*", metavar="REV", help="diff: git revisions (default: HEAD)")
    plots.add_argument(
        "-o", "--out", type=Path, default=Path("dvc_plots"), help="folder (default: dvc_plots)"
    )
    restore = commands.add_parser(
        "restore", help="put back a stage's outputs as dvc.lock records them, after a failed run"
    )
    restore.add_argument("stage", choices=STAGES[1:], help="the stage whose outputs to put back")
    predict = commands.add_parser(
        "predict",
        help="classify image files (PNG, JPEG, ...), .npy arrays and IDX files with the trained model",
        description="One line per image: path, class, probability, the top-k classes (tab-separated).",
    )
    predict.add_argument("inputs", nargs="+", type=Path, metavar="PATH", help="image, .npy or IDX files")
    predict.add_argument(
        "--model", type=Path, default=Paths().keras_model, help="a .keras model (default: models/model.keras)"
    )
    predict.add_argument("--top-k", type=int, default=3, help="classes to list per image (default: 3)")
    predict.add_argument("--json", action="store_true", help="one JSON object per line instead")
    args = parser.parse_args(argv)

    try:
        logs.configure()
    except PipelineError as exc:
        log.error("%s not run: %s", args.command, exc)
        return 1
    # SIGTERM (a cancelled run, `kill`) unwinds like Ctrl-C, so temporary files go and outputs stay whole.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.command in STAGES and os.environ.get(DVC_STAGE_ENV):
        _stop_with_dvc()
    try:
        if args.command == "restore":
            from pipeline.restore import restore

            restore(Path("."), args.stage)
            return 0
        if args.command == "plots":
            from pipeline import plots

            if args.action == "show" and args.revisions:
                parser.error("plots show takes no revisions; compare them with `plots diff REV...`")
            plots.render(None if args.action == "show" else args.revisions, args.out)
            return 0
        if args.command == "predict":
            with logs.native_start_up_lines_dropped():
                from pipeline import predict
            return predict.run(args.inputs, args.model, args.top_k, args.json)
        params = load_params(args.params)
        if args.command == "report":
            from pipeline import report

            try:
                report.run(
                    Paths(),
                    params.review,
                    base=args.base,
                    output=args.output,
                    image_base_url=args.image_base_url,
                )
            except report.GateFailed as exc:  # the report is done; the change did not pass
                log.error("%s", exc)
                return 1
        else:
            run_stage(args.command, params, Paths())
            if os.environ.get(DVC_STAGE_ENV):  # run by DVC: keep this run where `restore` finds it
                from pipeline.restore import remember

                remember(Path("."), args.command)
    except PipelineError as exc:
        log.error("%s failed: %s%s", args.command, exc, _restore_hint(args.command))
        return 1
    except OSError as exc:  # a missing input, a full disk, a read-only or forbidden folder
        log.error("%s failed: %s%s", args.command, _describe(exc), _restore_hint(args.command))
        return 1
    except Exception as exc:  # a bug or an unforeseen failure: the traceback, and its gist on line one
        log.error("%s failed: %s: %s", args.command, type(exc).__name__, exc, exc_info=True)
        return 1
    except KeyboardInterrupt:
        log.error("%s interrupted before it finished; nothing it wrote is left half-written", args.command)
        return 130
    return 0


def _stop_with_dvc() -> None:
    """A stage that DVC (``dvc repro``, a flow run) started stops when that process dies: nobody
    would record its result, and a later run's outputs must not be overwritten by it.

    Linux's parent-death signal covers a direct child; DVC starts the command through ``$SHELL -c``,
    which dash does not replace by the command, so a thread also watches the process above the shell.
    """
    import ctypes
    import sys
    import threading
    import time

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    import psutil

    try:
        parent = psutil.Process(os.getppid())
        starter = parent.parent() if parent.name() in {"sh", "dash", "bash", "zsh"} else parent
    except psutil.Error:  # the parent is gone already: the parent-death signal is on its way
        return
    if starter is None:
        return

    def watch() -> None:
        while starter.is_running():
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-dvc", daemon=True).start()


def _describe(exc: OSError) -> str:
    """``No space left on device: models/.best-model.1a2b.tmp.h5`` rather than a traceback.

    HDF5 (the ``.h5`` checkpoint) reports the errno and the file inside its message.
    """
    text = " ".join(str(exc).split())
    code = exc.errno or (int(found.group(1)) if (found := re.search(r"errno = (\d+)", text)) else None)
    where = exc.filename or (found.group(1) if (found := re.search(r"filename = '([^']+)'", text)) else None)
    if code is None:
        return text
    return os.strerror(code) + (f": {where}" if where else "")


def _restore_hint(command: str) -> str:
    """Under ``dvc repro`` (which sets ``DVC_STAGE``), DVC deleted the stage's outputs before it ran.

    A flow run (which names its log socket) puts them back itself.
    """
    if command not in STAGES[1:] or not os.environ.get(DVC_STAGE_ENV) or os.environ.get(logs.LOG_SOCKET_ENV):
        return ""
    return (
        f". DVC removed {command}'s outputs before running it; "
        f"`python -m pipeline restore {command}` puts back the ones dvc.lock records"
    )
