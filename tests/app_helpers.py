"""Helpers shared by the app tests: a fake retriever, a network guard, free ports, collections."""

from __future__ import annotations

import base64
import io
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from xmodal.errors import ImageDecodeError, XmodalError
from xmodal.index.records import Hit, Record

COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
RECORDS = [
    Record(path="/photos/2023/IMG_0001.jpg", caption="a red square", width=40, height=30),
    Record(path="/photos/2023/beach_day.png", caption="green  field\nat noon"),
    Record(path="C:\\Users\\me\\Pictures\\blue.webp", caption=None),
]
TOKEN = "correct-horse-battery"


@dataclass(frozen=True)
class FakeResult:
    hits: tuple
    reason: str | None = None


class FakeRetriever:
    """Three generated images, scores falling with rank; refuses empty queries like the real one."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.thumb_calls: list[tuple[int, int]] = []
        self.broken_thumbs: set[int] = set()
        self.explode = False

    def search(self, text=None, image=None, **options):
        return list(self.search_result(text, image, **options).hits)

    def search_result(
        self,
        text=None,
        image=None,
        *,
        negative=None,
        image_weight=0.5,
        k=10,
        threshold=None,
        where=None,
        mode="vector",
        keyword_weight=0.5,
    ):
        self.calls.append(
            {
                "text": text,
                "image": image,
                "k": k,
                "threshold": threshold,
                "negative": negative,
                "image_weight": image_weight,
                "where": where,
                "mode": mode,
                "keyword_weight": keyword_weight,
            }
        )
        if self.explode:
            raise RuntimeError("secret internal detail /srv/index.faiss")
        if not text and image is None:
            raise XmodalError("The query is empty: give a text or an image.")
        hits = [Hit(id=10 + i, score=0.9 - 0.2 * i, record=r) for i, r in enumerate(RECORDS)]
        if threshold is not None:
            hits = [h for h in hits if h.score >= threshold]
        return FakeResult(tuple(hits[:k]), None if hits else f"nothing at {threshold}")

    def describe(self):
        return {"model": "tiny-clip", "count": 3, "index": "Flat", "projection": None, "dim": 16}

    def load_thumbnail(self, hit_id, max_side=512):
        self.thumb_calls.append((hit_id, max_side))
        if hit_id in self.broken_thumbs or not 10 <= hit_id < 10 + len(RECORDS):
            raise XmodalError(f"item {hit_id} is no longer readable")
        return Image.new("RGB", (48, 32), COLOURS[hit_id - 10])


def install_fake_load_image(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Stand in for ``xmodal.images.load_image``; returns the list of calls it records."""
    calls: list[tuple] = []

    def load_image(source, *, max_pixels=None, draft_size=None):
        calls.append((source, max_pixels))
        if str(source).endswith(".txt") or source == b"not an image":
            raise ImageDecodeError("not-an-image", "this is not an image", source=str(source)[:40])
        return Image.new("RGB", (8, 8), (1, 2, 3))

    try:
        import xmodal.images as module
    except ImportError:
        module = types.ModuleType("xmodal.images")
        monkeypatch.setitem(sys.modules, "xmodal.images", module)
    monkeypatch.setattr(module, "load_image", load_image, raising=False)
    return calls


def png_bytes(size: tuple[int, int] = (20, 10), colour=(9, 9, 9)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_local(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def block_internet(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any connection or name lookup that is not this machine; return the attempts."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(f"test blocked a connection to {address}")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_local(host):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(f"test blocked a lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def build_photo_collection(model_dir: Path, photos: list[Path], target: Path):
    """A real Retriever over ``photos`` indexed with the model at ``model_dir``."""
    from xmodal.encoders import load_encoder
    from xmodal.index import Collection
    from xmodal.pipelines.indexing import IndexConfig, index_paths
    from xmodal.pipelines.search import Retriever

    encoder = load_encoder(str(model_dir), device="cpu", precision="fp32")
    with Collection.create(target, encoder.spec.to_dict(), index_key="flat") as collection:
        index_paths(
            encoder, collection, [str(p) for p in photos], IndexConfig(workers=0, progress=False)
        )
    return Retriever(encoder, Collection.open(target))


# A file name that is not valid UTF-8 (Linux allows any bytes but "/" and NUL in names).
NON_UTF8_NAME = os.fsdecode(b"caf\xe9-\xff.png")


def photo_folder(photos: list[Path], target: Path) -> Path:
    """``photos`` symlinked into ``target`` plus one copy under a non-UTF-8 name."""
    target.mkdir(parents=True)
    for photo in photos:
        (target / photo.name).symlink_to(photo)
    (target / NON_UTF8_NAME).write_bytes(photos[0].read_bytes())
    return target


def index_folder(model_dir: Path, folder: Path, target: Path) -> Path:
    """A collection of every image in ``folder``, indexed with the model at ``model_dir``."""
    build_photo_collection(model_dir, sorted(folder.iterdir()), target).collection.close()
    return target


class ServeProcess:
    """``xmodal serve`` as a child process on a free port, with its own Gradio cache folder."""

    def __init__(self, collection: Path, cache: Path, *extra: str, token: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cache = cache
        self.token = token
        env = {
            **os.environ,
            "GRADIO_TEMP_DIR": str(cache),
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "XMODAL_AUTH_TOKEN": token or "",
        }
        command = [sys.executable, "-m", "xmodal.cli", "serve", "-c", str(collection)]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), "--precision", "fp32", *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="backslashreplace",
        )
        self._wait_until_up(deadline=time.monotonic() + 180)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _wait_until_up(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"xmodal serve exited: {self.process.communicate()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.process.kill()
        raise AssertionError(
            f"xmodal serve did not listen within 180 s: {self.process.communicate()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str, str]:
        """Send ``sig``; return (exit code, stdout, stderr). Fails if it does not stop in time."""
        self.process.send_signal(sig)
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError(
                f"xmodal serve ignored signal {sig} for {timeout} s: {err}"
            ) from None
        return self.process.returncode, out, err

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
