"""Untrusted image inputs to pixels: the one decoding path of ``predict`` and ``serve``.

Inputs are told apart by their content:

- image files Pillow reads (PNG, JPEG, ...), any size and colour mode, made to look like the
  training data: transparency on white, grayscale (16-bit and float images scaled to 8 bits), a light
  background inverted to the dataset's dark one (judged by the border pixels' mean), then shrunk to
  fit 28x28 with its aspect ratio kept and centred on black;
- ``.npy`` arrays and IDX files (``.gz`` or not) as batches: shape ``(28, 28)``, ``(N, 28, 28)`` or
  ``(N, 28, 28, 1)``; integers 0-255, or floats in [0, 255], or in [0, 1] as the tutorial's ``x / 255``.

No input is trusted to be small: only regular files are opened (a FIFO or a device is refused
unread), and one input may hold at most :data:`MAX_INPUT_BYTES` (on disk, and once decompressed or
loaded: a ``.npy`` file's header is checked before its data loads), :data:`MAX_IMAGES_PER_INPUT` images
and, for a picture, :data:`MAX_IMAGE_PIXELS` pixels (checked from its header before it is decoded).
No TensorFlow here.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.dataset import IMAGE_SIDE, InputError, as_pixels
from pipeline.core.idx import IdxError, decode_idx

MAX_INPUT_BYTES = 256 << 20  # per input file, on disk and decompressed: 5x the 47 MB of the training images
MAX_IMAGES_PER_INPUT = 100_000  # per input file: more than the 70,000 of all Fashion-MNIST
MAX_IMAGE_PIXELS = 25_000_000  # per picture: a 24-megapixel photo fits (Pillow's own limit is 89 million)

_NPY_MAGIC = b"\x93NUMPY"
_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_MAGICS = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")
_NOT_REGULAR_FILES = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_inputs(path: Path) -> np.ndarray:
    """The images in one file, as a uint8 batch ``(N, 28, 28)``, within the limits per input."""
    try:
        _check_is_small_regular_file(path)
        with open(path, "rb") as file:
            return decode(file, str(path))
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def decode(file: BinaryIO, name: str) -> np.ndarray:
    """The images in ``file`` (told apart by content: ``.npy``, IDX, or a picture), as a uint8 batch
    ``(N, 28, 28)`` within the limits per input; ``name`` names it in errors."""
    head = file.read(8)
    file.seek(0)
    try:
        if head.startswith(_NPY_MAGIC):
            array = _load_npy(file, name)
        elif head.startswith(_GZIP_MAGIC) or head[:2] == b"\x00\x00":
            array = decode_idx(file.read(MAX_INPUT_BYTES + 1), name, max_bytes=MAX_INPUT_BYTES)
        else:
            return image_to_pixels(_open_image(file, name))[np.newaxis]
    except IdxError as exc:
        raise InputError(str(exc)) from None
    pixels = as_pixels(array, name)
    if len(pixels) > MAX_IMAGES_PER_INPUT:
        raise InputError(
            f"{name}: refused, {len(pixels):,} images; one input may hold {MAX_IMAGES_PER_INPUT:,}"
        )
    return pixels


def _check_is_small_regular_file(path: Path) -> None:
    """Refuse, without opening it, anything but a regular file of at most MAX_INPUT_BYTES."""
    status = os.stat(path)
    kind = stat.S_IFMT(status.st_mode)
    if kind != stat.S_IFREG:
        described = _NOT_REGULAR_FILES.get(kind, "a special file")
        raise InputError(f"{path}: is {described}, not a regular file; give image, .npy or IDX files")
    if status.st_size > MAX_INPUT_BYTES:
        raise InputError(f"{path}: refused, {status.st_size:,} bytes; one input may hold {MAX_INPUT_BYTES:,}")


def _load_npy(file: BinaryIO, path: str) -> np.ndarray:
    """The array, once its header shows it fits in MAX_INPUT_BYTES."""
    try:
        version = np.lib.format.read_magic(file)
        read_header = (  # versions 2.0 and 3.0 have the same header layout; np.load checks the version
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(file)
        size = math.prod(shape) * dtype.itemsize
        if size > MAX_INPUT_BYTES:
            raise InputError(
                f"{path}: refused, shape {shape} of {dtype} is {size:,} bytes; "
                f"one input may hold {MAX_INPUT_BYTES:,}"
            )
        file.seek(0)
        return np.load(file, allow_pickle=False)
    except (ValueError, EOFError) as exc:  # a truncated file, or objects that would need unpickling
        raise InputError(f"{path}: not a readable .npy array ({' '.join(str(exc).split())})") from None


def _open_image(file: BinaryIO, path: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)  # reads the header only
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"{path}: refused, too many pixels ({image.width}x{image.height}; "
                    f"predict decodes at most {MAX_IMAGE_PIXELS:,})"
                )
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
        border = 255 - border
    background = int(np.median(border))
    if background:  # a beige or gray background: down to the dataset's black, the garment stretched
        gray = gray.point(lambda value: round(max(0, value - background) * 255 / (255 - background)))
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
