"""``python -m pipeline validate``: check ``params.yaml`` and the dataset spec, doing nothing else.

``dvc repro`` does the same first, in the ingest stage (which depends on the whole file), before any
stage deletes its outputs; this is the check without DVC, e.g. before a commit.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.commands import run_command
from pipeline.core.params import DEFAULT_PARAMS_PATH, load_dataset_spec, load_params
from pipeline.core.paths import Paths

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline validate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--params", type=Path, default=DEFAULT_PARAMS_PATH, help="params file (default: params.yaml)"
    )
    args = parser.parse_args(argv)

    def validate() -> None:
        load_params(args.params)
        load_dataset_spec(Paths().dataset_spec)
        log.info("%s and %s are valid", args.params, Paths().dataset_spec)

    return run_command("validate", validate)


if __name__ == "__main__":
    raise SystemExit(main())
