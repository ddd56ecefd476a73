"""The revision of a model kept in a plain directory: every weight byte, hashed once and cached.

Checkpoints over 256 MiB used to be sampled (three 4 MiB chunks), so two different large local
checkpoints could share an identity; the threshold and chunk are shrunk here to keep files small.
"""

from __future__ import annotations

import json
import os

import pytest

from xmodal.encoders import loading


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "_CHUNK", 64)
    monkeypatch.setattr(loading, "_FULL_HASH_LIMIT", 1024, raising=False)  # the old sampling
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "clip"}')
    return directory


def weights(middle: int) -> bytes:
    data = bytearray(4096)
    data[1000] = middle  # outside the head, middle and tail chunks of the old sampling
    return bytes(data)


def test_checkpoints_differing_in_the_middle_differ(model_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_bytes((model_dir / "config.json").read_bytes())
    (model_dir / "model.safetensors").write_bytes(weights(1))
    (other / "model.safetensors").write_bytes(weights(2))
    first = loading.resolve_model(model_dir).revision
    assert first.startswith("local-")
    assert loading.resolve_model(other).revision != first


def test_digest_is_cached_until_a_file_changes(model_dir, monkeypatch):
    weights_file = model_dir / "model.safetensors"
    weights_file.write_bytes(weights(1))
    reads = []
    hash_files = loading._hash_files
    monkeypatch.setattr(loading, "_hash_files", lambda files: reads.append(1) or hash_files(files))

    first = loading.resolve_model(model_dir).revision
    assert loading.resolve_model(model_dir).revision == first and len(reads) == 1  # cache hit

    stat = weights_file.stat()
    os.utime(weights_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert loading.resolve_model(model_dir).revision == first and len(reads) == 2  # re-hashed

    cache = loading._cache_path()
    cache.write_text("{not json")  # a corrupt cache is ignored, then rewritten
    assert loading.resolve_model(model_dir).revision == first and len(reads) == 3
    assert len(json.loads(cache.read_text())["entries"]) == 1
