"""Finding model weights: a local directory or a Hugging Face hub id, safetensors only.

A hub id is resolved to a snapshot directory first (from the local cache when it is there, from
the hub otherwise), so the collection can record the exact commit that produced it. Pickled
weights are never loaded: a checkpoint without safetensors is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from xmodal.errors import ModelLoadError

log = logging.getLogger(__name__)

# Everything a dual encoder needs to run, and nothing pickled.
_ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "tokenizer*",
    "spiece*",
]
_CHUNK = 4 * 1024 * 1024
_CACHE_ENTRIES = 256


@dataclass(frozen=True)
class ModelSource:
    """A model directory on disk, with the name and revision that identify its weights."""

    directory: Path
    model_id: str
    revision: str


def resolve_model(name_or_path: str | os.PathLike, revision: str | None = None) -> ModelSource:
    """Turn a hub id or a directory into a local snapshot, or raise one clear ModelLoadError."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        _require_safetensors(path, str(name_or_path))
        return ModelSource(path.resolve(), path.resolve().name, _fingerprint(path))
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelLoadError(
            f"model directory {name} does not exist; pass a Hugging Face model id "
            "(e.g. openai/clip-vit-base-patch32) or a directory saved with save_pretrained"
        )
    directory = _snapshot(name, revision)
    _require_safetensors(directory, name)
    return ModelSource(directory, name, directory.name)


def check_recorded_source(source: str | None) -> None:
    """Refuse, with the way out, a recorded model directory that is no longer there.

    Collections record where their model was loaded from so that search and serve can reload
    it; a model directory moved since then is given again with ``--model NEW_PATH`` (a copy or
    a moved directory is accepted: identity is the weights' hash, not the path).
    """
    if source and Path(source).is_absolute() and not Path(source).is_dir():
        raise ModelLoadError(
            f"the model this collection was built with is no longer at {source} (moved or "
            "deleted); pass its new location with --model NEW_PATH"
        )


def _snapshot(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    kwargs = {"repo_id": repo_id, "revision": revision, "allow_patterns": _ALLOW_PATTERNS}
    try:
        return Path(snapshot_download(local_files_only=True, **kwargs))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as exc:
        log.debug("%s not in the local cache: %s", repo_id, exc)
    except HFValidationError as exc:
        raise ModelLoadError(f"{repo_id!r} is neither a directory nor a valid model id") from exc
    offline_hint = (
        f"model {repo_id} is not in the local Hugging Face cache and the hub cannot be reached; "
        f"download it where there is network (hf download {repo_id}) or pass a local "
        "directory: --model /path/to/model-dir"
    )
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise ModelLoadError(offline_hint)
    try:
        return Path(snapshot_download(**kwargs))
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelLoadError(
            f"no model {repo_id} (revision {revision or 'main'}) on the Hugging Face hub; "
            "check the id, or log in (hf auth login) if it is gated or private"
        ) from exc
    except HFValidationError as exc:
        raise ModelLoadError(f"{repo_id!r} is neither a directory nor a valid model id") from exc
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise ModelLoadError(offline_hint) from exc
    except Exception as exc:  # httpx/requests transport errors vary across hub versions
        if "connect" in type(exc).__name__.lower() or "timeout" in type(exc).__name__.lower():
            raise ModelLoadError(offline_hint) from exc
        raise


def _require_safetensors(directory: Path, name: str) -> None:
    if not (directory / "config.json").is_file():
        raise ModelLoadError(
            f"{name} has no config.json; pass a directory written by save_pretrained "
            "(config.json, *.safetensors and the processor files)"
        )
    if not any(directory.glob("*.safetensors")):
        raise ModelLoadError(
            f"{name} has no .safetensors weights; xmodal loads safetensors only because pickled "
            "weights (.bin/.pt) can run code. Convert it with save_pretrained(..., "
            "safe_serialization=True)"
        )


def _fingerprint(directory: Path) -> str:
    """A content hash standing in for a commit id for models kept in plain directories.

    Every byte of the weights and config.json is hashed (sampling chunks of a large checkpoint
    let two different checkpoints share an identity). Hashing gigabytes on every load would be
    slow, so the result is cached, keyed by each file's absolute path, size and mtime_ns: any
    rewrite of a file changes its key.
    """
    files = sorted(directory.glob("*.safetensors")) + [directory / "config.json"]
    key = _cache_key(files)
    cache = _read_cache()
    if key in cache:
        return cache[key]
    revision = _hash_files(files)
    if _cache_key(files) == key:  # unchanged while we read it: safe to remember
        _write_cache(cache, key, revision)
    return revision


def _hash_files(files: list[Path]) -> str:
    """blake2b-128 over each file's name, size and every byte, in order."""
    digest = hashlib.blake2b(digest_size=16)
    for path in files:
        with path.open("rb") as handle:
            digest.update(f"{path.name}:{os.fstat(handle.fileno()).st_size}".encode())
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
    return "local-" + digest.hexdigest()


def _cache_path() -> Path:
    """``$XMODAL_CACHE/weight-digests.json``, else under ``~/.cache/xmodal``."""
    root = os.environ.get("XMODAL_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "xmodal"
    return base / "weight-digests.json"


def _cache_key(files: list[Path]) -> str:
    stats = [(path.resolve(), path.stat()) for path in files]
    return json.dumps([[str(p), st.st_size, st.st_mtime_ns] for p, st in stats])


def _read_cache() -> dict[str, str]:
    """The cached digests; a missing, unreadable or malformed cache is simply empty."""
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items() if isinstance(v, str) and v.startswith("local-")}


def _write_cache(cache: dict[str, str], key: str, revision: str) -> None:
    """Add one entry, atomically (temp file + rename); a cache that cannot be written is skipped."""
    entries = dict(list(cache.items())[-(_CACHE_ENTRIES - 1) :]) | {key: revision}
    path = _cache_path()
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"version": 1, "entries": entries}, handle)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("could not write the weight digest cache %s: %s", path, exc)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
