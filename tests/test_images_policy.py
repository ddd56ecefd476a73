"""Decoding policy: the format allow-list (no Ghostscript), one pixel cap, files read once."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pytest
from image_helpers import raise_reason
from PIL import Image

from xmodal import image_files
from xmodal.images import ALLOWED_FORMATS, CONTENT_HASH, MAX_IMAGE_PIXELS, load_image

# A minimal EPS: PIL identifies it by content and renders it by running `gs`.
EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
)


def fake_ghostscript(folder: Path) -> Path:
    """A `gs` that records being run (in folder/gs-called) and fails; returns its folder."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    marker = folder / "gs-called"
    script = bin_dir / "gs"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{marker}"\nexit 1\n')
    script.chmod(0o755)
    return bin_dir


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height and whose data holds one pixel row."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_bytes", [False, True], ids=["file", "upload-bytes"])
def test_eps_named_png_never_reaches_ghostscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_bytes: bool
) -> None:
    bin_dir = fake_ghostscript(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "photo.bmp"
    path.write_bytes(EPS)
    source = EPS if as_bytes else path
    error = raise_reason(source, "unsupported", "PostScript/EPS is not decoded")
    assert "gs" not in str(error).split() and "-dSAFER" not in str(error)
    assert not (tmp_path / "gs-called").exists()


@pytest.mark.parametrize("kind", ["PDF", "WMF", "XBM"])
def test_formats_off_the_list_are_refused_by_content(kind: str) -> None:
    data = {
        "PDF": b"%PDF-1.4\n1 0 obj <<>> endobj\n%%EOF\n",
        "WMF": b"\xd7\xcd\xc6\x9a" + bytes(60),
        "XBM": b"#define im_width 8\n#define im_height 1\nstatic char im_bits[] = {0x00};\n",
    }[kind]
    reason = "unsupported" if kind == "PDF" else "not-an-image"
    raise_reason(data, reason, "is not decoded" if kind == "PDF" else "accepted: JPEG, PNG")


def test_allow_list_names_only_formats_pil_registers() -> None:
    Image.init()
    assert set(ALLOWED_FORMATS) <= set(Image.OPEN)
    assert not {"EPS", "PDF", "WMF", "MPEG"} & set(ALLOWED_FORMATS)


# --- one pixel cap -------------------------------------------------------------------------------


def test_pil_limit_is_the_policy_cap() -> None:
    assert Image.MAX_IMAGE_PIXELS == MAX_IMAGE_PIXELS


def test_an_accepted_100mp_header_makes_pil_say_nothing() -> None:
    # 100 MP is under our cap: PIL's default limit (89.5 MP) used to warn about it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # whatever filters the process has: nothing is emitted
        raise_reason(png_header(10_000, 10_000), "truncated", "truncated or corrupt")
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize(
    ("side", "reason"),
    [(10_000, "truncated"), (12_000, "decompression-bomb"), (20_000, "decompression-bomb")],
    ids=["100MP-accepted", "144MP-over-the-cap", "400MP-over-pils-hard-limit"],
)
def test_big_headers_print_no_warning_in_a_plain_python_run(
    tmp_path: Path, side: int, reason: str
) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png_header(side, side))
    code = (
        "import sys\nfrom xmodal.errors import ImageDecodeError\n"
        "from xmodal.images import load_image\n"
        "try:\n    load_image(sys.argv[1])\nexcept ImageDecodeError as e:\n    print(e.reason)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert (done.stdout.strip(), done.stderr) == (reason, "")


# --- read once -----------------------------------------------------------------------------------


def _bmp(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, "BMP")  # uncompressed: one size
    return buffer.getvalue()


def _blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def test_the_hash_is_of_the_bytes_that_were_decoded(tmp_path: Path) -> None:
    path = tmp_path / "red.bmp"
    path.write_bytes(_bmp((255, 0, 0)))
    image = load_image(path)
    assert image.info[CONTENT_HASH] == _blake(path.read_bytes())
    assert load_image(_bmp((255, 0, 0))).info[CONTENT_HASH] == _blake(_bmp((255, 0, 0)))


def _rewrite_after_reading(monkeypatch: pytest.MonkeyPatch, path: Path, times: int) -> list[int]:
    """Make the first ``times`` reads of ``path`` see a writer replace its bytes right after."""
    reads, real = [], image_files._read_all
    blue = _bmp((0, 0, 255))
    assert len(blue) == path.stat().st_size  # an in-place rewrite of the same size

    def read_then_rewritten(handle, name):
        data = real(handle, name)
        reads.append(len(data))
        if len(reads) <= times:
            path.write_bytes(blue)
            stat = path.stat()  # mtime is coarse: make the rewrite visible deterministically
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000 * len(reads)))
        return data

    monkeypatch.setattr(image_files, "_read_all", read_then_rewritten)
    return reads


def test_a_file_rewritten_while_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "photo.bmp"
    path.write_bytes(_bmp((255, 0, 0)))
    reads = _rewrite_after_reading(monkeypatch, path, times=1)
    image = load_image(path)
    assert len(reads) == 2
    assert image.getpixel((0, 0)) == (0, 0, 255)  # the new bytes, decoded ...
    assert image.info[CONTENT_HASH] == _blake(_bmp((0, 0, 255)))  # ... and hashed


def test_a_file_that_keeps_changing_is_changed_during_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "photo.bmp"
    path.write_bytes(_bmp((255, 0, 0)))
    reads = _rewrite_after_reading(monkeypatch, path, times=99)
    raise_reason(path, "changed-during-read", "photo.bmp: the file changed while it was read")
    assert len(reads) == image_files.READ_ATTEMPTS


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:  # sparse: costs no disk and no time
        handle.truncate(image_files.MAX_FILE_BYTES + 1)
    raise_reason(path, "too-large", "huge.jpg: file is 1024 MiB, over the 1024 MiB cap")
