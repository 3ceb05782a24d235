"""``python -m pipeline predict``: classify images with the self-contained ``models/model.keras``.

Inputs, told apart by their content:

- image files Pillow reads (PNG, JPEG, ...), any size and colour mode, made to look like the
  training data: transparency on white, grayscale (16-bit and float images scaled to 8 bits), a light
  background inverted to the dataset's dark one (judged by the border pixels' mean), then shrunk to
  fit 28x28 with its aspect ratio kept and centred on black;
- ``.npy`` arrays and IDX files (``.gz`` or not) as batches: shape ``(28, 28)``, ``(N, 28, 28)`` or
  ``(N, 28, 28, 1)``; integers 0-255, or floats in [0, 255], or in [0, 1] as the tutorial's ``x / 255``.

:func:`classify` is the one way to turn pixels into classes: the CLI and the evaluate stage use it.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import keras
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline import model_file
from pipeline.dataset import IMAGE_SIDE
from pipeline.errors import PipelineError
from pipeline.idx import IdxError, decode_idx
from pipeline.paths import Paths

log = logging.getLogger(__name__)

DEFAULT_MODEL = Paths().keras_model
_NPY_MAGIC = b"\x93NUMPY"
_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_MAGICS = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


class InputError(PipelineError):
    """An input is not an image or array of images this model can classify."""


@dataclass(frozen=True)
class Prediction:
    """One image's class, its probability and the ``top_k`` most likely classes, most likely first."""

    label: int
    class_name: str
    probability: float
    top_k: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Classifier:
    """A trained model and the names of its classes, as ``model.keras`` stores them."""

    model: keras.Model
    class_names: tuple[str, ...]

    @classmethod
    def load(cls, path: Path = DEFAULT_MODEL) -> Classifier:
        return cls(model_file.load(path), model_file.class_names(path))


def classify(
    images: np.ndarray, classifier: Classifier | None = None, *, top_k: int = 3, batch_size: int = 256
) -> list[Prediction]:
    """Classify ``images``: one or a batch of 28x28 pixel arrays (see the module's rules), with
    ``classifier`` or else ``models/model.keras``."""
    classifier = classifier or Classifier.load()
    pixels = as_pixels(np.asarray(images), "images")
    probabilities = classifier.model.predict(pixels, batch_size=batch_size, verbose=0)
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    names = classifier.class_names
    return [
        Prediction(
            label=int(order[0]),
            class_name=names[order[0]],
            probability=float(row[order[0]]),
            top_k=tuple((names[i], float(row[i])) for i in order),
        )
        for row, order in zip(probabilities, ranked, strict=True)
    ]


def as_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as a uint8 batch ``(N, 28, 28)``, or an :class:`InputError` that says what is wrong."""
    side = (IMAGE_SIDE, IMAGE_SIDE)
    shape = array.shape
    if shape == side:
        array = array[np.newaxis]
    elif array.ndim == 4 and shape[1:] == (*side, 1):
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != side:
        raise InputError(f"{name}: expected 28x28 images, shape (28, 28) or (N, 28, 28); got shape {shape}")
    if len(array) == 0:
        raise InputError(f"{name}: holds no images (shape {shape})")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise InputError(f"{name}: pixel values must be 0 to 255; got {low} to {high}")
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InputError(f"{name}: holds NaN or infinite pixel values")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise InputError(f"{name}: pixel values must be in [0, 1] or [0, 255]; got {low:g} to {high:g}")
        scale = 255.0 if high <= 1.0 else 1.0
        return np.rint(array * scale).astype(np.uint8)
    raise InputError(f"{name}: pixel arrays must hold numbers; got dtype {array.dtype}")


def read_inputs(path: Path) -> np.ndarray:
    """The images in one file, as a uint8 batch ``(N, 28, 28)``."""
    try:
        with open(path, "rb") as file:
            head = file.read(8)
            file.seek(0)
            if head.startswith(_NPY_MAGIC):
                array = _load_npy(file, path)
            elif head.startswith(_GZIP_MAGIC) or head[:2] == b"\x00\x00":
                array = decode_idx(file.read(), str(path))
            else:
                return image_to_pixels(_open_image(file, path))[np.newaxis]
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; give image, .npy or IDX files") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except IdxError as exc:
        raise InputError(str(exc)) from None
    return as_pixels(array, str(path))


def _load_npy(file: BinaryIO, path: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except (ValueError, EOFError) as exc:  # a truncated file, or objects that would need unpickling
        raise InputError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())})") from None


def _open_image(file: BinaryIO, path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)
            image.load()
    except UnidentifiedImageError:
        file.seek(0)
        if file.read(8).startswith(_IMAGE_MAGICS):
            raise InputError(f"{path}: broken image file (an image's header, unreadable data)") from None
        raise InputError(f"{path}: not an image, .npy array or IDX file") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: refused, too many pixels ({exc})") from None
    except (OSError, SyntaxError) as exc:  # truncated or corrupt image data
        raise InputError(f"{path}: broken image file ({exc})") from None
    return image


def image_to_pixels(image: Image.Image) -> np.ndarray:
    """A picture as the training data looks: 28x28 uint8, light garment on a dark background."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    gray = Image.fromarray(_eight_bit(image))
    pixels = np.asarray(gray)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:  # a light background, as in photos and scans: invert to dark
        gray = ImageOps.invert(gray)
    gray = ImageOps.contain(gray, (IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (IMAGE_SIDE, IMAGE_SIDE), 0)
    canvas.paste(gray, ((IMAGE_SIDE - gray.width) // 2, (IMAGE_SIDE - gray.height) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def _eight_bit(image: Image.Image) -> np.ndarray:
    """Grayscale 0-255, scaling 16-bit and float images rather than clipping them."""
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        high = values.max() if values.size else 0
        scale = 255.0 if image.mode == "F" and high <= 1 else 255.0 / 65535 if high > 255 else 1.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def run(paths: Sequence[Path], model: Path, top_k: int, as_json: bool) -> int:
    """The command: one line per image on stdout, one per bad input on stderr; 1 if any input failed."""
    classifier = Classifier.load(model)
    if not 1 <= top_k <= len(classifier.class_names):
        raise InputError(f"--top-k must be 1 to {len(classifier.class_names)}; got {top_k}")
    batches, failed = [], False
    for path in paths:
        try:
            batches.append((path, read_inputs(path)))
        except InputError as exc:
            log.error("%s", exc)
            failed = True
    if batches:
        predictions = iter(classify(np.concatenate([b for _, b in batches]), classifier, top_k=top_k))
        for path, batch in batches:
            for index in range(len(batch)):
                print(_line(path, index, len(batch), next(predictions), as_json))
    return 1 if failed else 0


def _line(path: Path, index: int, count: int, prediction: Prediction, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "path": str(path),
                "index": index,
                "class": prediction.class_name,
                "label": prediction.label,
                "probability": round(prediction.probability, 6),
                "top_k": [{"class": name, "probability": round(p, 6)} for name, p in prediction.top_k],
            }
        )
    where = f"{path}[{index}]" if count > 1 else str(path)
    ranking = ", ".join(f"{name} {p:.3f}" for name, p in prediction.top_k)
    return f"{where}\t{prediction.class_name}\t{prediction.probability:.3f}\t{ranking}"
