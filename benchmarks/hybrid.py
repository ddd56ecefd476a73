"""Keyword vs vector vs hybrid search R@10 on the captioned photos, caption-word queries.

Data: ``/work/shared/data/captioned`` (COCO photos, 5 captions each). Each image is indexed with
ONE caption as its catalog caption (caption 0); the query of an image is 3 words sampled
(seed 0) from a held-out caption (caption 1) after dropping a short stop-word list; its ground
truth is that image. R@k: the share of queries whose image is among the first k results.

Vector mode needs a model; the only one available offline is the demo model, trained on coloured
shapes, so on photos its vector recall is expected near chance (k / n). The hybrid rows show
what fusion does to keyword recall when the vector list is this weak. Run:
``python benchmarks/hybrid.py``.
"""

from __future__ import annotations

import json
import random
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine_info, shared_data_dir, write_json  # noqa: E402

from xmodal.demo.train import ensure_demo_model  # noqa: E402
from xmodal.encoders import load_encoder  # noqa: E402
from xmodal.errors import XmodalError  # noqa: E402
from xmodal.index import Collection  # noqa: E402
from xmodal.index.records import Record  # noqa: E402
from xmodal.pipelines.search import Retriever  # noqa: E402

STOP = {"a", "an", "the", "of", "on", "in", "at", "to", "with", "and", "is", "are", "it", "its"}
STOP |= {"his", "her", "their", "this", "that", "for", "some", "there", "two", "one", "while"}
STOP |= {"by", "from", "near", "next", "up", "has"}
WORDS = 3
KS = (1, 5, 10)
RUNS = {
    "keyword": {"mode": "keyword"},
    "vector": {"mode": "vector"},
    "hybrid w=0.5": {"mode": "hybrid", "keyword_weight": 0.5},
    "hybrid w=0.7": {"mode": "hybrid", "keyword_weight": 0.7},
    "hybrid w=0.9": {"mode": "hybrid", "keyword_weight": 0.9},
}


def _rows() -> list[tuple[Path, list[str]]]:
    root = shared_data_dir() / "captioned"
    rows = []
    for line in (root / "captions.jsonl").read_text().splitlines():
        record = json.loads(line)
        if len(record["captions"]) >= 2:
            rows.append((root / record["file"], record["captions"]))
    return rows


def _query(caption: str, rng: random.Random) -> str:
    words = [w for w in re.findall(r"[a-z]+", caption.lower()) if w not in STOP]
    return " ".join(rng.sample(words, min(WORDS, len(words))))


def main() -> None:
    rows = _rows()
    rng = random.Random(0)
    queries = [_query(captions[1], rng) for _, captions in rows]
    model = ensure_demo_model(None)
    encoder = load_encoder(model, device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        writer = Collection.create(Path(tmp) / "c", encoder.spec.to_dict(), index_key="flat")
        vectors = encoder.encode_images([str(path) for path, _ in rows])
        ids = writer.add(vectors, [Record(str(p), caption=c[0]) for p, c in rows])
        writer.commit()
        retriever = Retriever(encoder, writer)
        results = {
            name: _recall(retriever, queries, ids, options) for name, options in RUNS.items()
        }
        writer.close()
    payload = {
        "benchmark": "hybrid",
        "data": f"captioned photos: {len(rows)} images; catalog caption = caption 0; query = "
        f"{WORDS} non-stop words sampled (seed 0) from caption 1",
        "model": f"{model.name} (trained on coloured shapes, not photos)",
        "chance": {f"R@{k}": round(k / len(rows), 4) for k in KS},
        "rrf_k": 60,
        "results": results,
        "example_queries": queries[:5],
        "machine": machine_info(),
    }
    out = HERE / "results"
    write_json(out / "hybrid.json", payload)
    (out / "hybrid.md").write_text(_markdown(payload))
    print(_markdown(payload))


def _recall(retriever: Retriever, queries: list[str], ids: np.ndarray, options: dict) -> dict:
    found = {k: 0 for k in KS}
    for query, item in zip(queries, ids.tolist(), strict=True):
        try:
            hits = retriever.search(query, k=max(KS), **options)
        except XmodalError:  # a query with no usable words is a miss, not a crash
            hits = []
        ranked = [h.id for h in hits]
        for k in KS:
            found[k] += item in ranked[:k]
    return {f"R@{k}": round(found[k] / len(queries), 4) for k in KS}


def _markdown(payload: dict) -> str:
    lines = [
        "# Keyword, vector and hybrid search on captioned photos",
        "",
        f"{payload['data']}. Model: {payload['model']}. Hybrid = reciprocal rank fusion "
        f"(k = {payload['rrf_k']}), w = keyword weight.",
        "",
        "| mode | " + " | ".join(f"R@{k}" for k in KS) + " |",
        "|---|" + "---:|" * len(KS),
    ]
    for name, recall in payload["results"].items():
        lines.append(f"| {name} | " + " | ".join(f"{recall[f'R@{k}']:.3f}" for k in KS) + " |")
    chance = payload["chance"]
    lines.append("| chance | " + " | ".join(f"{chance[f'R@{k}']:.3f}" for k in KS) + " |")
    lines += ["", "Example queries: " + "; ".join(payload["example_queries"]), ""]
    machine = payload["machine"]
    lines.append(f"Machine: {machine.get('cpu_model')} ({machine.get('cpu_cores')} cores).")
    lines.append("Run: `python benchmarks/hybrid.py`.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
