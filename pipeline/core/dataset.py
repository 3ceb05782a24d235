"""What Fashion-MNIST is: its four IDX files, its class names and what a batch of its images is.

Where the files come from and the SHA-256 of each file's decompressed bytes live in
``datasets/fashion-mnist.yaml`` (:class:`pipeline.core.params.DatasetSpec`), which the ingest stage depends
on: the identity of the data is versioned with the code, apart from the params users vary.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import PipelineError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
IMAGE_SIDE = 28  # every image is IMAGE_SIDE x IMAGE_SIDE grayscale pixels

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class InputError(PipelineError):
    """An input is not an image or array of images this model can classify."""


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
