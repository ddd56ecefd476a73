"""Zero-shot tagging accuracy of the demo model on the demo world, against a linear probe.

The demo world (``xmodal.demo.world``) draws coloured shapes; the demo model was trained on its
captions. Here a fresh world (seed 123, 216 images: 6 of each colour/shape/size) is embedded
once (fp32) and split in half, stratified by class (seed 0). On the same held-out half:

- zero-shot: ``xmodal tag``'s classifier (``pipelines.tagging.zeroshot``: prompt-ensemble label
  rows, softmax over the labels of the model's logit scale x cosine), top-1 label, with the CLIP
  paper's 80 templates (``default``), ``single`` ("a photo of a {}.") and the template "a {}";
- linear probe: ``xmodal probe``'s classifier (standardised features + logistic regression,
  ``pipelines.features.probe``), trained on the other half with the class labels.

Tasks: shape (3 classes) and colour (6 classes). Run: ``python benchmarks/tags.py``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine_info, write_json  # noqa: E402

from xmodal.demo.train import ensure_demo_model  # noqa: E402
from xmodal.demo.world import COLOURS, SHAPES, make_world  # noqa: E402
from xmodal.encoders import load_encoder  # noqa: E402
from xmodal.pipelines.features.probe import ProbeConfig, _fit_and_score, _sklearn  # noqa: E402
from xmodal.pipelines.tagging.templates import IMAGENET_TEMPLATES, SINGLE_TEMPLATE  # noqa: E402
from xmodal.pipelines.tagging.zeroshot import label_embeddings, probabilities  # noqa: E402

TEMPLATES = {"default (80)": IMAGENET_TEMPLATES, "single": (SINGLE_TEMPLATE,), "a {}": ("a {}",)}
TASKS = {"shape": SHAPES, "colour": tuple(COLOURS)}


def main() -> None:
    model = ensure_demo_model(None)
    encoder = load_encoder(model, device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        items = make_world(Path(tmp) / "world", 216, seed=123)
        x = encoder.encode_images([str(item.path) for item in items])
    sklearn = _sklearn()
    head = encoder.zero_shot_head()
    results = {}
    for task, labels in TASKS.items():
        y = np.array([labels.index(getattr(item.attributes, task)) for item in items])
        train, test = sklearn.model_selection.train_test_split(
            np.arange(len(y)), test_size=0.5, random_state=0, stratify=y
        )
        probe = _fit_and_score(
            sklearn, x[train], y[train], x[test], y[test], list(labels), ProbeConfig(), 0
        )
        row = {"classes": len(labels), "n_test": len(test), "chance": 1 / len(labels)}
        row["linear_probe"] = round(probe.accuracy, 4)
        for name, templates in TEMPLATES.items():
            probs = probabilities(x[test], label_embeddings(encoder, labels, templates), head)
            row[f"zero_shot {name}"] = round(float((probs.argmax(1) == y[test]).mean()), 4)
        results[task] = row
    payload = {
        "benchmark": "tags",
        "model": f"{model.name} (xmodal demo, CLIP 64-d)",
        "logit_scale": round(head.scale, 4),
        "world": {"seed": 123, "images": 216, "split": "half train / half test, stratified"},
        "results": results,
        "machine": machine_info(),
    }
    out = HERE / "results"
    write_json(out / "tags.json", payload)
    (out / "tags.md").write_text(_markdown(payload))
    print(_markdown(payload))


def _markdown(payload: dict) -> str:
    names = ["linear_probe", *(f"zero_shot {n}" for n in TEMPLATES)]
    lines = [
        "# Zero-shot tags vs linear probe (demo model, demo world)",
        "",
        f"Model {payload['model']}, logit scale {payload['logit_scale']}; world seed 123, 216 "
        "images, half held out (stratified). Top-1 accuracy on the held-out half.",
        "",
        "| task | classes | chance | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for task, row in payload["results"].items():
        cells = [f"{row[n]:.3f}" for n in names]
        lines.append(
            f"| {task} | {row['classes']} | {row['chance']:.3f} | " + " | ".join(cells) + " |"
        )
    machine = payload["machine"]
    lines += ["", f"Machine: {machine.get('cpu_model')} ({machine.get('cpu_cores')} cores).", ""]
    lines.append("Run: `python benchmarks/tags.py`.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
