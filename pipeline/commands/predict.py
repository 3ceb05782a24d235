"""``python -m pipeline predict``: classify images with the self-contained ``models/model.keras``.

The project's model from any folder of the project, as the other commands find it; the inputs and a
``--model`` file are named from the current folder.

Inputs are image files (PNG, JPEG, ...), ``.npy`` arrays and IDX files, decoded and capped by
:mod:`pipeline.inputs`. The pixels go through :func:`pipeline.model.inference.classify`, as the
evaluate stage's do. Arguments and inputs are checked before TensorFlow loads; a refused input is one
line on stderr, and the others are still classified.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from pipeline.commands import run_command
from pipeline.commands.project import project_paths
from pipeline.core import logs
from pipeline.core.dataset import CLASS_NAMES, InputError
from pipeline.inputs import read_inputs

log = logging.getLogger(__name__)

PROGRESS_FROM_FILES = 20  # inputs from which a terminal shows a progress bar while they are read


def run(paths: Sequence[Path], model: Path, top_k: int, as_json: bool) -> int:
    """The command: one line per image on stdout, one per bad input on stderr; 1 if any input failed.

    ``top_k`` and the inputs are checked before the model (and TensorFlow) loads."""
    if not 1 <= top_k <= len(CLASS_NAMES):
        raise InputError(f"--top-k must be 1 to {len(CLASS_NAMES)}; got {top_k}")
    batches, failed = [], False
    # Many files on a terminal: a bar over them on stderr, cleared when done (stdout stays the results).
    for path in tqdm(paths, desc="reading", unit="file", leave=False, disable=_no_bar(len(paths))):
        try:
            batches.append((path, read_inputs(path)))
        except InputError as exc:
            log.error("%s", exc)
            failed = True
    if not batches:
        return 1
    if not model.is_file():
        raise InputError(f"{model}: no such model file; train one with `dvc repro train`")
    with logs.native_start_up_lines_dropped():
        from pipeline.model.inference import Classifier, classify_inputs
    classifier = Classifier.load(model)
    if top_k > len(classifier.class_names):
        raise InputError(f"--top-k must be 1 to {len(classifier.class_names)} for {model}; got {top_k}")
    counts = {path: len(batch) for path, batch in batches}
    for path, index, prediction in classify_inputs(batches, classifier, top_k=top_k):
        print(_line(path, index, counts[path], prediction, as_json))
    return 1 if failed else 0


def _no_bar(count: int) -> bool:
    return count < PROGRESS_FROM_FILES or not sys.stderr.isatty()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline predict",
        description="Classify image files (PNG, JPEG, ...), .npy arrays and IDX files with the trained "
        "model. One line per image: path, class, probability, the top-k classes (tab-separated).",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="PATH", help="image, .npy or IDX files")
    parser.add_argument(
        "--model", type=Path, help="a .keras model (default: the project's models/model.keras)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="classes to list per image (default: 3)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead")
    args = parser.parse_args(argv)
    return run_command(
        "predict",
        lambda: run(args.inputs, args.model or project_paths().keras_model, args.top_k, args.json),
    )


def _line(path: Path, index: int, count: int, prediction, as_json: bool) -> str:
    if as_json:
        return json.dumps({"path": str(path), "index": index, **prediction.as_dict()})
    where = f"{path}[{index}]" if count > 1 else str(path)
    ranking = ", ".join(f"{name} {p:.3f}" for name, p in prediction.top_k)
    return f"{where}\t{prediction.class_name}\t{prediction.probability:.3f}\t{ranking}"


if __name__ == "__main__":
    raise SystemExit(main())
