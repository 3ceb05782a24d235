"""``python -m pipeline validate``: check ``params.yaml`` and the dataset spec, doing nothing else.

From any folder of the project, as the other commands: the project's ``params.yaml`` and dataset spec
(a ``--params`` file is named from the current folder).

``dvc repro`` does the same first, in the ingest stage (which depends on the whole file), before any
stage deletes its outputs; this is the check without DVC, e.g. before a commit.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from pipeline.commands import run_command
from pipeline.commands.project import project_paths
from pipeline.core.dataset import TRAIN_LABELS
from pipeline.core.idx import read_idx
from pipeline.core.params import DEFAULT_PARAMS_PATH, load_dataset_spec, load_params
from pipeline.core.splits import check_split

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline validate", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, help="params file (default: the project's params.yaml)")
    args = parser.parse_args(argv)

    def validate() -> None:
        paths = project_paths()
        params_file = args.params or paths.root / DEFAULT_PARAMS_PATH
        params = load_params(params_file)
        load_dataset_spec(paths.dataset_spec)
        labels = paths.raw_dir / TRAIN_LABELS
        if labels.is_file():  # the checks that need the data, once ingest has fetched it
            split = params.preprocess
            check_split(read_idx(labels), test_size=split.test_size, stratify=split.stratify)
        log.info("%s and %s are valid", params_file, paths.dataset_spec)

    return run_command("validate", validate)


if __name__ == "__main__":
    raise SystemExit(main())
