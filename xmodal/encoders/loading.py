"""Finding model weights: a local directory or a Hugging Face hub id, safetensors only.

A hub id is resolved to a snapshot directory first (from the local cache when it is there, from
the hub otherwise), so the collection can record the exact commit that produced it. Pickled
weights are never loaded: a checkpoint without safetensors is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
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
_FULL_HASH_LIMIT = 256 * 1024 * 1024
_CHUNK = 4 * 1024 * 1024


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
    """A content hash standing in for a commit id for models kept in plain directories."""
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(directory.glob("*.safetensors")) + [directory / "config.json"]:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            if size <= _FULL_HASH_LIMIT:
                for block in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(block)
            else:  # huge checkpoints: header plus head, middle and tail chunks
                for offset in (0, size // 2, max(size - _CHUNK, 0)):
                    handle.seek(offset)
                    digest.update(handle.read(_CHUNK))
    return "local-" + digest.hexdigest()
