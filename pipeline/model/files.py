"""Model files: the tutorial's ``.h5`` checkpoint and the self-contained ``.keras`` export.

Both load with ``safe_mode``: a model file may come from a shared DVC remote, so one that would run
code when loaded is refused. So is a ``.keras`` zip whose members declare more than
:data:`MAX_MODEL_BYTES` decompressed, or a JSON member more than :data:`MAX_JSON_BYTES` (checked before
anything reads them), and a model that does not take 28x28 images and give a probability per class:
one of 10 outputs, from a softmax (a last layer with a softmax activation, or a ``Softmax`` layer;
a model ending in logits would give scores that predict and evaluate would print as probabilities).

The ``.keras`` file carries the class names in its ``metadata.json`` (Keras writes that file and never
reads it back) and is written byte-for-byte reproducibly, so DVC sees a changed file only when the
model changed.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path

import keras

from pipeline.core import atomic
from pipeline.core.dataset import CLASS_NAMES, IMAGE_SIDE
from pipeline.core.errors import PipelineError

METADATA_JSON = "metadata.json"  # keras.src.saving.saving_lib's name for it
MAX_MODEL_BYTES = 1 << 30  # all of a .keras file's members, decompressed; the presets' models are a few MiB
MAX_JSON_BYTES = 16 << 20  # each of its JSON members, which are read whole and parsed; they are KiBs
INPUT_SHAPE = (None, IMAGE_SIDE, IMAGE_SIDE)  # a batch of uint8 images, as classify feeds them
OUTPUT_SHAPE = (None, len(CLASS_NAMES))  # a probability per class
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can have
# What Keras, h5py, zipfile and zlib raise for a file that is broken or not a model.
_BROKEN_FILE_ERRORS = (ValueError, TypeError, KeyError, OSError, EOFError, zlib.error, zipfile.BadZipFile)


class ModelFileError(PipelineError):
    """A model file is missing, not a Keras model, or would run code when loaded."""


def load(path: Path) -> keras.Model:
    """Load ``path`` (``.h5`` or ``.keras``) without running any code it carries, once its sizes are
    checked, and check that it takes 28x28 images and gives a probability per class; not compiled (the
    caller compiles what it measures)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file; train one with `dvc repro train`")
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as archive:
                _check_declared_sizes(archive, path)
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except _BROKEN_FILE_ERRORS as exc:
        text = str(exc).strip()
        first_line = text.splitlines()[0] if text else type(exc).__name__
        raise ModelFileError(
            f"{path}: refused, not a model this pipeline trains or unsafe to load ({first_line}); "
            "train it again with `dvc repro train`"
        ) from None
    shapes = getattr(model, "input_shape", None), getattr(model, "output_shape", None)  # None: never built
    if shapes != (INPUT_SHAPE, OUTPUT_SHAPE):
        raise ModelFileError(
            f"{path}: refused, takes inputs {shapes[0]} and gives outputs {shapes[1]}; this pipeline's "
            f"models take {INPUT_SHAPE} and give {OUTPUT_SHAPE}; train it again with `dvc repro train`"
        )
    last = _output_layer(model)
    if not _is_softmax(last):
        activation = last.get_config().get("activation")
        has = f"activation {activation}" if isinstance(activation, str) else "no softmax activation"
        raise ModelFileError(
            f"{path}: refused, its outputs are not probabilities (its last layer, {type(last).__name__} "
            f"{last.name!r}, has {has}); this pipeline's models end in a softmax; train it again "
            "with `dvc repro train`"
        )
    return model


def _output_layer(model: keras.Model) -> keras.Layer:
    """The layer that gives ``model``'s output (the last of a model nested last)."""
    layer = model
    while isinstance(layer, keras.Model) and layer.layers:
        layer = layer.layers[-1]
    return layer


def _is_softmax(layer: keras.Layer) -> bool:
    """Whether ``layer``'s outputs are a softmax over the classes (the last axis)."""
    if isinstance(layer, keras.layers.Softmax):
        return layer.get_config().get("axis") in (-1, len(OUTPUT_SHAPE) - 1)
    return layer.get_config().get("activation") == "softmax"


def class_names(path: Path) -> tuple[str, ...]:
    """The class names that :func:`save_keras` stored in ``path``."""
    try:
        with zipfile.ZipFile(path) as archive:
            _check_declared_sizes(archive, path)
            names = json.loads(archive.read(METADATA_JSON)).get("class_names")
    except zipfile.BadZipFile:
        raise ModelFileError(
            f"{path}: not a .keras file; predict needs the export that carries the class names "
            "(models/model.keras)"
        ) from None
    except (OSError, KeyError, ValueError, EOFError, zlib.error):
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ModelFileError(
            f"{path}: no class names in its {METADATA_JSON}; export it with `dvc repro train`"
        )
    return tuple(names)


def _check_declared_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse a zip whose members would decompress to more than the limits: zipfile stops reading a
    member at the size it declares, so the declared sizes bound what reading it costs."""
    for member in archive.infolist():
        if member.filename.endswith(".json") and member.file_size > MAX_JSON_BYTES:
            raise ModelFileError(
                f"{path}: refused, its {member.filename} would decompress to {member.file_size:,} bytes; "
                f"a JSON member may have {MAX_JSON_BYTES:,}"
            )
    total = sum(member.file_size for member in archive.infolist())
    if total > MAX_MODEL_BYTES:
        raise ModelFileError(
            f"{path}: refused, its members would decompress to {total:,} bytes; "
            f"a model may have {MAX_MODEL_BYTES:,}"
        )


def save_keras(
    model: keras.Model, target: Path, class_names: tuple[str, ...], trained_on: str | None = None
) -> None:
    """Write ``model`` as a ``.keras`` file with ``class_names`` (and the machine it was
    ``trained_on``, which the registry's lineage names) in its metadata, atomically.

    Keras stamps the save time into the metadata and the zip entries; both are fixed here, so the
    same model gives the same bytes.
    """
    with atomic.atomic_path(target) as tmp:
        model.save(tmp)
        atomic.write_bytes(tmp, _reproducible(tmp.read_bytes(), class_names, trained_on))


def _reproducible(keras_zip: bytes, class_names: tuple[str, ...], trained_on: str | None = None) -> bytes:
    output = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(keras_zip)) as source, zipfile.ZipFile(output, "w") as target:
        for entry in source.infolist():
            content = source.read(entry)
            if entry.filename == METADATA_JSON:
                metadata = json.loads(content)
                metadata.pop("date_saved", None)
                metadata["class_names"] = list(class_names)
                if trained_on:
                    metadata["trained_on"] = trained_on
                content = json.dumps(metadata, indent=2, sort_keys=True).encode()
            info = zipfile.ZipInfo(entry.filename, date_time=_FIXED_ZIP_TIME)
            info.compress_type = entry.compress_type
            info.external_attr = 0o644 << 16
            target.writestr(info, content)
    return output.getvalue()
