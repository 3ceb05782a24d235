"""Decode and encode IDX files (the MNIST format): a magic number, big-endian dimensions, raw data."""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError

# Third magic byte: element type. Fashion-MNIST uses only unsigned bytes, but the format has more.
_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder(">") if dtype.itemsize > 1 else dtype: code for code, dtype in _DTYPES.items()}


class IdxError(PipelineError, ValueError):
    """The bytes are not a well-formed IDX file."""


def decode_idx(data: bytes, name: str = "<bytes>", max_bytes: int | None = None) -> np.ndarray:
    """Parse IDX bytes (gzip-compressed or not), checking magic, dimensions and length.

    With ``max_bytes``, data longer than that once decompressed is refused, and a gzip stream is
    decompressed no further than that: a gzip bomb never expands in memory."""
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
                data = stream.read(-1 if max_bytes is None else max_bytes + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxError(f"{name}: corrupt gzip stream ({exc})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise IdxError(f"{name}: refused, more than {max_bytes:,} bytes of IDX data once decompressed")
    if len(data) < 4:
        raise IdxError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, type_code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or type_code not in _DTYPES or ndim == 0:
        raise IdxError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()} "
            "(expected 0x0000, a type code such as 0x08 for uint8, and at least one dimension)"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxError(f"{name}: truncated header: {ndim} dimensions need {header_len} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[type_code]
    expected = header_len + math.prod(shape) * dtype.itemsize  # Python ints: no overflow past 2**63
    if len(data) != expected:
        raise IdxError(
            f"{name}: file length {len(data)} does not match its header "
            f"(shape {shape} of {dtype} needs {expected} bytes)"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or not) from disk."""
    return decode_idx(Path(path).read_bytes(), name=str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """Serialize an array as IDX bytes (uncompressed)."""
    big_endian = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big_endian not in _CODES:
        raise IdxError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, _CODES[big_endian], array.ndim])
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return header + dims + np.ascontiguousarray(array, dtype=big_endian).tobytes()
