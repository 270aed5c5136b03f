"""Bounded decoding: an image above --max-pixels is refused from its header, before any decode,
naming the file; a decode-cache entry missing a field is rebuilt, not a traceback."""
from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import invoke, spaced
from data_trees import class_tree, gradient, write
from mtssl.data.decode import read_image
from mtssl.data.pixel_limit import DEFAULT_MAX_PIXELS, max_pixels, pixel_limit
from mtssl.data.errors import DataError
from mtssl_plugins.targets import CLASS_LABEL


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(path: Path, side: int = 12000) -> Path:
    """A valid side x side 16-bit grayscale PNG of zeros (~300 KB on disk), built without compressing 288 MB.

    Each block of 200 rows is deflated after a full flush, which resets the compressor, so every block
    compresses to the same bytes: compress one, repeat it, and close the zlib stream with the Adler-32
    of the whole image.
    """
    rows = 200
    block = (b"\x00" * (1 + 2 * side)) * rows  # per row: filter byte 0, then 16-bit pixels
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    compressed = raw.compress(block) + raw.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(side // rows):
        adler = zlib.adler32(block, adler)
    stream = b"\x78\xda" + compressed * (side // rows) + raw.flush() + adler.to_bytes(4, "big")
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def huge(tmp_path_factory) -> Path:
    return huge_png(tmp_path_factory.mktemp("huge") / "huge16.png")


def test_the_default_limit_is_100_megapixels():
    assert DEFAULT_MAX_PIXELS == max_pixels() == 100_000_000


def test_a_12000_square_16_bit_png_is_refused_without_decoding(huge, monkeypatch):
    assert huge.stat().st_size < 2_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(huge) as image:  # a real, well-formed PNG of that size
            assert image.size == (12000, 12000) and image.mode.startswith("I")


    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(DataError) as info:
        read_image(huge)
    assert info.value.path == str(huge)
    assert "12000x12000 = 144.0 megapixels, above the limit of 100 megapixels" in info.value.problem
    assert "--max-pixels" in info.value.problem


def test_the_limit_is_configurable(tmp_path):
    file = write(tmp_path / "small.png", gradient(0, 64))
    with pixel_limit(64 * 64 - 1):
        with pytest.raises(DataError, match=r"small\.png: image is 64x64"):
            read_image(file)
    with pixel_limit(64 * 64):
        assert read_image(file).shape == (64, 64)
    with pytest.raises(ValueError, match="--max-pixels must be at least 1"):
        with pixel_limit(0):
            pass


def test_data_inspect_lists_an_oversized_file_as_bad(tmp_path):
    root = class_tree(tmp_path / "d", {"a": 2, "b": 2})
    write(root / "a" / "big.png", gradient(1, 96))
    result = invoke(["data", "inspect", f"folders:{root}", "--json", "--max-pixels", str(64 * 64)])
    assert result.exit_code == 0, result.output
    bad = json.loads(result.stdout)["bad"]
    assert [Path(b["path"]).name for b in bad] == ["big.png"] and "--max-pixels" in bad[0]["reason"]


def test_training_on_an_oversized_file_is_one_line_naming_it(tmp_path, huge):
    root = class_tree(tmp_path / "d", {"a": 3, "b": 3})
    (root / "b" / "huge16.png").write_bytes(huge.read_bytes())
    result = invoke(["train", "--quiet", "--task", "cls", "--cls-data", f"folders:{root}", "--cls-labels", "2",
                     "--size", "32", "--steps", "1", "--batch-size", "2", "--out", str(tmp_path / "runs"),
                     "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{root / 'b' / 'huge16.png'}: image is 12000x12000" in spaced(result.stderr)


def test_a_cache_entry_missing_a_field_is_rebuilt(host, tmp_path):
    from mtssl.data.cache import META, cache_key
    from mtssl.data.prepare import load_arrays, open_source

    root = class_tree(tmp_path / "d", {"a": 3, "b": 3})
    source = open_source(host, f"folders:{root}", CLASS_LABEL, 0)
    first = load_arrays(source, 16, cache_dir=tmp_path / "cache")
    meta_file = tmp_path / "cache" / cache_key(source, 16) / META
    for broken in ({"kept": [0], "skipped": [], "size": 16},  # no count
                   {"count": 6, "skipped": [], "size": 16},  # no kept
                   {"count": "six", "kept": [0], "skipped": [], "size": 16},
                   {"count": 6, "kept": [0, 1, 2, 3, 4, 99], "skipped": [], "size": 16},
                   ["not", "a", "mapping"]):
        meta_file.write_text(json.dumps(broken))
        again = load_arrays(source, 16, cache_dir=tmp_path / "cache")
        assert again.keys == first.keys and np.array_equal(again.images, first.images)
        assert "count" in json.loads(meta_file.read_text())  # rebuilt in place
