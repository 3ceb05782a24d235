"""IDX decoding: round trips, and every kind of corrupt file is a clear error."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.idx import IdxError, decode_idx, encode_idx, read_idx


@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.arange(5, dtype=np.uint8),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
        np.arange(-3, 3, dtype=np.int32),
    ],
)
def test_round_trip_plain_and_gzip(array: np.ndarray) -> None:
    data = encode_idx(array)
    for blob in (data, gzip.compress(data)):
        decoded = decode_idx(blob)
        assert decoded.dtype == array.dtype.newbyteorder("=")
        np.testing.assert_array_equal(decoded, array)


def test_header_layout_matches_the_format() -> None:
    data = encode_idx(np.zeros((3, 28, 28), dtype=np.uint8))
    assert data[:4] == b"\x00\x00\x08\x03"
    assert data[4:16] == (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    assert len(data) == 16 + 3 * 28 * 28


def test_read_idx_from_disk(tmp_path) -> None:
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(encode_idx(np.array([1, 2, 3], dtype=np.uint8))))
    np.testing.assert_array_equal(read_idx(path), [1, 2, 3])


GOOD = encode_idx(np.zeros((2, 4, 4), dtype=np.uint8))


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "too short"),
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x03" + GOOD[4:], "bad IDX magic"),
        (b"\x00\x00\x07\x03" + GOOD[4:], "bad IDX magic"),
        (b"\x00\x00\x08\x00", "bad IDX magic"),
        (GOOD[:10], "truncated header"),
        (GOOD[:-1], "does not match its header"),
        (GOOD + b"\x00", "does not match its header"),
        (gzip.compress(GOOD, mtime=0)[:-10], "corrupt gzip"),
    ],
)
def test_corrupt_input_is_a_clear_error(blob: bytes, message: str) -> None:
    with pytest.raises(IdxError, match=message) as error:
        decode_idx(blob, name="data/raw/broken")
    assert str(error.value).startswith("data/raw/broken: ")


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        # Plausible headers (zeros, a type code, a dimension count) followed by anything.
        st.tuples(st.sampled_from(list(range(0x07, 0x10))), st.integers(0, 4), st.binary(max_size=64)).map(
            lambda parts: bytes([0, 0, parts[0], parts[1]]) + parts[2]
        ),
        # A gzip header, then anything.
        st.binary(max_size=64).map(lambda tail: b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + tail),
        # The same, gzip-compressed, whole or cut short.
        st.tuples(st.binary(max_size=64), st.integers(0, 80)).map(
            lambda parts: gzip.compress(bytes([0, 0, 8, 1]) + parts[0])[: parts[1] or None]
        ),
    )
)
def test_any_bytes_decode_to_an_array_or_an_idx_error(blob: bytes) -> None:
    try:
        array = decode_idx(blob)
    except IdxError:
        return
    assert isinstance(array, np.ndarray)


def test_dimensions_whose_product_passes_2_to_the_63_are_an_idx_error() -> None:
    """2**31 * 2**31 * 4 is 2**64, which wraps to 0 in int64: a header alone must not pass the
    length check and end in reshape's ValueError."""
    header = bytes([0, 0, 0x08, 3]) + np.asarray([2**31, 2**31, 4], dtype=">u4").tobytes()
    with pytest.raises(IdxError, match="does not match its header"):
        decode_idx(header, "huge.idx")
