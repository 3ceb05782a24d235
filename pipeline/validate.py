"""Stage 0, validate: ``params.yaml`` as a whole, and the dataset spec, are valid; checked before any
stage deletes outputs.

DVC removes a stage's outputs before it runs the stage's command, so a stage that found a bad value
in ``params.yaml`` would already have lost its previous outputs. This stage depends on the whole
file, and every other stage depends on its marker: ``dvc repro`` runs it first, and a bad value stops
the pipeline here, in a second, with every output still in place. The marker's content never
changes, so a valid edit reruns only the stages whose own params changed.
"""

from __future__ import annotations

from pipeline import atomic
from pipeline.params import Params, load_dataset_spec
from pipeline.paths import Paths

MARKER = "params.yaml is valid for pipeline/params.py\n"


def main(params: Params, paths: Paths) -> None:
    """The stage's command; :mod:`pipeline.cli` has validated ``params`` before calling it."""
    load_dataset_spec(paths.dataset_spec)
    atomic.write_text(paths.params_valid, MARKER)
