"""Linear-probe accuracy of the demo model's features: ``xmodal probe`` on the demo world by shape.

Data: the held-out demo world (the seed ``xmodal demo`` indexes, 720 images by default), filed
into one folder per shape (circle, square, triangle: 3 balanced classes). Model: the cached
demo model (``~/.cache/xmodal/demo-model-v2``, trained by ``xmodal demo`` when missing). Each
representation is probed by the real command, ``xmodal probe DIR --model M --precision fp32
--json`` (fp32 so the figures do not depend on the CPU's bf16 support), default split (20 %
held out, stratified, seed 0) and C. The demo model is trained for a time budget, so another
machine's demo model (and its accuracies) can differ: the results file records the model
file's SHA-256.

Run: ``python benchmarks/probe.py [--images N] [--representations R ...] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, write_json  # noqa: E402

from xmodal.demo.run import HELD_OUT_SEED  # noqa: E402
from xmodal.demo.train import ensure_demo_model  # noqa: E402
from xmodal.demo.world import sample_world  # noqa: E402


def shape_folders(root: Path, n: int, seed: int) -> Path:
    """The demo world's images filed by shape, one subfolder per class."""
    for number, (attrs, image) in enumerate(sample_world(n, seed=seed)):
        folder = root / attrs.shape
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{number:04d}.png")
    return root


def probe(dataset: Path, model: Path, representation: str) -> dict:
    command = [sys.executable, "-m", "xmodal.cli", "probe", str(dataset), "--model", str(model)]
    command += ["--precision", "fp32", "--representation", representation, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    shown = ["xmodal", *command[3:]]
    shown[shown.index(str(dataset))] = "shapes"
    return {"command": " ".join(shown), **report}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=720, help="world size (default 720)")
    p.add_argument("--representations", nargs="+", default=["embedding", "hidden:1"])
    p.add_argument("--quick", action="store_true", help="144 images")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    images = 144 if args.quick else args.images
    model = ensure_demo_model()
    digest = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="xmodal-probe-") as tmp:
        dataset = shape_folders(Path(tmp) / "shapes", images, HELD_OUT_SEED)
        rows = [{"name": r, **probe(dataset, model, r)} for r in args.representations]
    payload = {
        "benchmark": "probe",
        "command": " ".join(["python", "benchmarks/probe.py", *sys.argv[1:]]),
        "config": {
            "images": images,
            "world_seed": HELD_OUT_SEED,
            "classes": "shape (circle, square, triangle)",
            "model": "demo model (xmodal demo), ~/.cache/xmodal/demo-model-v2",
            "model_sha256": digest,
            "precision": "fp32",
        },
        "machine": machine_info(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "probe.json", payload)
    for row in rows:
        print(f"{row['name']}: accuracy {row['accuracy']:.3f} (chance {row['chance']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
