"""Preprocessing speed: xmodal's fast pixel pipeline vs. the model's own image processor.

xmodal reproduces a processor's resize / crop / rescale / normalise recipe in
:class:`xmodal.encoders.preprocess.PixelPipeline`; a processor it cannot reproduce (ALIGN's
EfficientNet, anything that pads or tiles) falls back to calling the processor itself, one image
per call, exactly as :class:`~xmodal.encoders.preprocess.Preparer` does. This measures what that
fallback costs, preprocessing only (no model, no decoding):

  (A) pipeline   ``Preparer(PixelPipeline)``: xmodal's own path
  (B) processor  ``Preparer(None, image_processor)``: the processor fallback

Setup: the CLIP family at 224 px (``CLIPImageProcessor()``'s defaults, those of
openai/clip-vit-base-patch32: bicubic shortest edge 224, centre crop 224), ``--images`` shared
photos decoded once beforehand. Both paths are warmed up, then timed interleaved A, B, A, B ...
for ``--repeats`` rounds so a load swing on a shared machine hits both alike; medians are
reported. The two outputs are compared too (max absolute difference), so the speed-up is for
the same pixels.

Run: ``python benchmarks/preprocess_fallback.py [--images N] [--repeats R] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import Measurement, captioned_images, machine_info, timed, write_json  # noqa: E402

from xmodal.encoders.preprocess import Preparer, pipeline_from_processor  # noqa: E402
from xmodal.images import load_image  # noqa: E402

HERE = Path(__file__).resolve().parent
IMAGE_SIZE = 224


def preparers() -> tuple[Preparer, Preparer, str]:
    """(fast pipeline, processor fallback, the processor's class name) for CLIP at 224 px."""
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor()  # transformers may hand back its PIL backend class
    pipeline = pipeline_from_processor(processor)
    if pipeline is None or pipeline.output_hw != (IMAGE_SIZE, IMAGE_SIZE):
        raise SystemExit(f"xmodal did not build a {IMAGE_SIZE} px pipeline for {processor}")
    return Preparer(pipeline), Preparer(None, processor), type(processor).__name__


def max_abs_difference(a: Preparer, b: Preparer, images: list) -> float:
    return max(float(np.max(np.abs(a.preprocess(im) - b.preprocess(im)))) for im in images)


def run_rounds(workloads: dict[str, Preparer], images: list, repeats: int) -> dict:
    """Warm up, then time each workload once per round, interleaved; load average per round."""
    measurements = {name: Measurement(name, len(images)) for name in workloads}
    for preparer in workloads.values():
        for image in images[:8]:
            preparer.preprocess(image)
    load = []
    for round_no in range(repeats):
        load.append(round(os.getloadavg()[0], 2))
        for name, preparer in workloads.items():
            seconds = timed(lambda p=preparer: [p.preprocess(im) for im in images])
            measurements[name].seconds.append(seconds)
            logging.info("round %d %s: %.1f images/s", round_no + 1, name, len(images) / seconds)
    return {"measurements": measurements, "load_average_1m_per_round": load}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64, help="shared photos (default 64)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    load_at_start = [round(v, 2) for v in os.getloadavg()]
    fast, fallback, processor_class = preparers()
    images = [load_image(path) for path in captioned_images(args.images)]  # decoded, untimed
    workloads = {"xmodal_pixel_pipeline": fast, "hf_image_processor": fallback}
    rounds = run_rounds(workloads, images, args.repeats)
    measured = rounds["measurements"]
    ratio = (
        measured["xmodal_pixel_pipeline"].images_per_s / measured["hf_image_processor"].images_per_s
    )
    result = {
        "benchmark": "preprocess_fallback",
        "command": f"python benchmarks/preprocess_fallback.py --images {args.images} "
        f"--repeats {args.repeats}",
        "machine": machine_info(),
        "config": {
            "family": "clip",
            "image_size": IMAGE_SIZE,
            "images": len(images),
            "repeats": args.repeats,
            "order": "interleaved A, B per round after one warm-up pass of 8 images each",
            "processor_class": processor_class,
            "pipeline": fast.pipeline.summary(),
        },
        # Other work on the machine slows both paths; the load average says how busy it was.
        "load_average_at_start": {
            "1m": load_at_start[0],
            "5m": load_at_start[1],
            "15m": load_at_start[2],
        },  # fmt: skip
        "load_average_1m_per_round": rounds["load_average_1m_per_round"],
        "results": {name: m.to_dict() for name, m in measured.items()},
        "ratio_pipeline_over_processor": round(ratio, 2),
        "max_abs_difference": max_abs_difference(fast, fallback, images),
    }
    write_json(args.out / "preprocess_fallback.json", result)
    logging.info(
        "pipeline %.1f images/s, processor %.1f images/s: %.2fx (load average at start %s)",
        measured["xmodal_pixel_pipeline"].images_per_s,
        measured["hf_image_processor"].images_per_s,
        ratio,
        load_at_start,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
