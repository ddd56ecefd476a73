"""Near-duplicate detection on real photos: recall and precision of planted copies.

Data: the 298 photos of ``shared/data/captioned/images`` plus, for every ``--stride``-th photo
(sorted), four transformed copies written to a temp dir: JPEG re-encoded at quality 70, resized
to half, a 10 % crop (5 % off each side), and a horizontal flip. Everything is indexed with the
demo model (``~/.cache/xmodal/demo-model-v2``, trained on synthetic shapes, fp32, CPU) through
``xmodal index``'s pipeline.

Truth: two items are a *copy pair* when they come from the same source photo (original-copy and
copy-copy pairs). Measured per threshold (0.80 .. 0.99):

- ``pairs``: the pairs with cosine >= threshold (the links ``xmodal duplicates`` unions);
- ``groups``: the pairs that ``find_duplicates`` puts in one group (connected components, so
  chains add pairs the links alone do not have);
- recall = true pairs found / all copy pairs; precision = true pairs found / pairs found;
- per transform: the recall of original-copy pairs.

Run: ``python benchmarks/duplicates.py [--stride 5] [--out benchmarks/results]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import captioned_images, machine_info, write_json
from PIL import Image, ImageOps

THRESHOLDS = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.98, 0.99)
DEFAULT = 0.95


def transforms() -> dict:
    def jpeg70(im: Image.Image, out: Path) -> None:
        im.save(out, "JPEG", quality=70)

    def half(im: Image.Image, out: Path) -> None:
        im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.BICUBIC).save(out)

    def crop10(im: Image.Image, out: Path) -> None:
        dx, dy = round(im.width * 0.05), round(im.height * 0.05)
        im.crop((dx, dy, im.width - dx, im.height - dy)).save(out)

    def flip(im: Image.Image, out: Path) -> None:
        ImageOps.mirror(im).save(out)

    return {"jpeg70": jpeg70, "half": half, "crop10": crop10, "flip": flip}


def make_copies(photos: list[str], stride: int, folder: Path) -> dict[str, tuple[str, str]]:
    """Transformed copies of every ``stride``-th photo; path -> (source photo, transform)."""
    made = {}
    for source in photos[::stride]:
        with Image.open(source) as opened:
            im = ImageOps.exif_transpose(opened).convert("RGB")
        for name, apply in transforms().items():
            out = folder / f"{Path(source).stem}__{name}.jpg"
            apply(im, out)
            made[os.path.realpath(out)] = (os.path.realpath(source), name)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    from xmodal.demo.train import ensure_demo_model
    from xmodal.encoders import load_encoder
    from xmodal.index import Collection
    from xmodal.index.neighbours import gather
    from xmodal.pipelines.curation import DuplicateConfig, find_duplicates
    from xmodal.pipelines.indexing import IndexConfig, index_paths

    photos = captioned_images()
    work = Path(tempfile.mkdtemp(prefix="xmodal-dups-"))
    try:
        copies_dir = work / "copies"
        copies_dir.mkdir()
        copies = make_copies(photos, args.stride, copies_dir)
        model = ensure_demo_model()
        encoder = load_encoder(str(model), device="cpu", precision="fp32")
        started = time.perf_counter()
        with Collection.create(work / "col", encoder.spec.to_dict(), index_key="flat") as col:
            index_paths(
                encoder, col, photos + sorted(copies), IndexConfig(workers=0, progress=False)
            )
        index_s = time.perf_counter() - started
        with Collection.open(work / "col") as col:
            ids, rows = col.raw_embeddings()
            records = col.get_records(ids)
            family = {
                int(i): copies.get(records[int(i)].path, (records[int(i)].path, "original"))
                for i in ids
            }
            truth = _truth(family)
            sims = gather(rows, np.arange(len(ids)))
            sims = sims @ sims.T
            sweep = [
                _evaluate(col, ids, sims, family, truth, t, find_duplicates, DuplicateConfig)
                for t in THRESHOLDS
            ]
        result = {
            "benchmark": "duplicates",
            "machine": machine_info(),
            "model": str(model),
            "photos": len(photos),
            "sources_copied": len(photos[:: args.stride]),
            "copies": len(copies),
            "items": len(ids),
            "copy_pairs": len(truth),
            "index_seconds": round(index_s, 1),
            "default_threshold": DEFAULT,
            "sweep": sweep,
            "command": f"python benchmarks/duplicates.py --stride {args.stride}",
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "duplicates.json", result)
    (args.out / "duplicates.md").write_text(_markdown(result))
    print(_markdown(result))


def _truth(family: dict[int, tuple[str, str]]) -> set[tuple[int, int]]:
    by_source: dict[str, list[int]] = {}
    for item_id, (source, _) in family.items():
        by_source.setdefault(source, []).append(item_id)
    return {
        (a, b)
        for members in by_source.values()
        for a, b in itertools.combinations(sorted(members), 2)
    }


def _evaluate(col, ids, sims, family, truth, threshold, find_duplicates, config_type) -> dict:
    a, b = np.nonzero(np.triu(sims >= threshold, 1))
    linked = {
        (int(min(ids[i], ids[j])), int(max(ids[i], ids[j]))) for i, j in zip(a, b, strict=True)
    }
    report = find_duplicates(col, config_type(threshold=threshold, keep="first"))
    grouped = {
        (x, y)
        for g in report.groups
        for x, y in itertools.combinations(sorted(m.id for m in g.members), 2)
    }
    per_transform = {}
    for name in ("jpeg70", "half", "crop10", "flip"):
        wanted = {
            p
            for p in truth
            if name in (family[p[0]][1], family[p[1]][1])
            and "original" in (family[p[0]][1], family[p[1]][1])
        }
        per_transform[name] = round(len(wanted & linked) / len(wanted), 3) if wanted else None
    return {
        "threshold": threshold,
        "pairs": _scores(linked, truth),
        "groups": {**_scores(grouped, truth), "count": len(report.groups)},
        "original_copy_recall_by_transform": per_transform,
    }


def _scores(found: set, truth: set) -> dict:
    hit = len(found & truth)
    return {
        "found": len(found),
        "true": hit,
        "recall": round(hit / len(truth), 3),
        "precision": round(hit / len(found), 3) if found else None,
    }


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Near-duplicates on real photos (demo model)",
        "",
        f"{r['photos']} photos + {r['copies']} copies of {r['sources_copied']} of them "
        f"(JPEG q70, half size, 10 % crop, flip) = {r['items']} items, {r['copy_pairs']} copy "
        f"pairs. Model: the demo model (trained on synthetic shapes, not photos), fp32. "
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores. Command: `{r['command']}`.",
        "",
        "| threshold | links recall | links precision | groups recall | groups precision "
        "| groups | q70 | half | crop | flip |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["sweep"]:
        p, g, t = row["pairs"], row["groups"], row["original_copy_recall_by_transform"]
        lines.append(
            f"| {row['threshold']:.2f} | {p['recall']} | {p['precision']} | {g['recall']} | "
            f"{g['precision']} | {g['count']} | {t['jpeg70']} | {t['half']} | {t['crop10']} | "
            f"{t['flip']} |"
        )
    lines += ["", "Per-transform columns: recall of original-copy links at that threshold.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
