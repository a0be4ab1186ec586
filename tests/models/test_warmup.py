"""Warmup records: TF Serving's TFRecord file read strictly; a cut or oversized file is one clear load error."""

from __future__ import annotations

import random
import struct

import pytest

from tidal.models.warmup import MAX_RECORDS, WarmupError, read_records


def record(data: bytes) -> bytes:
    return struct.pack("<Q", len(data)) + b"\0" * 4 + data + b"\0" * 4


def test_reads_records(tmp_path):
    path = tmp_path / "w"
    path.write_bytes(record(b"one") + record(b"") + record(b"three"))
    assert read_records(str(path)) == [b"one", b"", b"three"]


@pytest.mark.parametrize("data, message", [
    (record(b"abc")[:-2], "claims 3 bytes"),
    (b"\x01\x02", "truncated record header"),
    (record(b"x") * (MAX_RECORDS + 1), "more than 1000 warmup records"),
])
def test_bad_files(tmp_path, data, message):
    path = tmp_path / "w"
    path.write_bytes(data)
    with pytest.raises(WarmupError, match=message):
        read_records(str(path))


def test_random_bytes_never_crash(tmp_path):
    rng = random.Random(3)
    path = tmp_path / "w"
    for _ in range(300):
        path.write_bytes(rng.randbytes(rng.randrange(0, 64)))
        try:
            read_records(str(path))
        except WarmupError:
            pass
