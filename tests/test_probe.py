"""The linear probe on a synthetic, separable folder-per-class dataset (the demo world)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from xmodal.cli import main
from xmodal.demo.world import COLOURS, sample_world
from xmodal.errors import XmodalError


def _colour_folders(root: Path, n: int, seed: int) -> Path:
    """The demo world's images filed by colour: 6 classes, n / 6 images each."""
    for number, (attrs, image) in enumerate(sample_world(n, seed=seed)):
        folder = root / attrs.colour
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{number:04d}.png")
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    return _colour_folders(tmp_path_factory.mktemp("colours"), 72, seed=0)


@pytest.fixture(scope="module")
def demo_encoder(demo_model_dir):
    from xmodal.encoders import load_encoder

    return load_encoder(demo_model_dir, device="cpu", precision="fp32")


def test_probe_separates_the_demo_colours(colours, demo_encoder):
    from xmodal.pipelines.features.probe import ProbeConfig, run_probe

    report = run_probe(demo_encoder, colours, ProbeConfig(test_size=0.3, workers=0))
    # Measured 1.000 on worlds of seeds 0, 1 and 2; chance (6 balanced classes) is about 1/6.
    assert report.classes == tuple(sorted(COLOURS))
    assert (report.n_train, report.n_test) == (50, 22)
    assert report.chance < 0.25
    assert report.accuracy >= 0.85 and report.balanced_accuracy >= 0.85
    assert sum(score.support for score in report.per_class) == report.n_test
    assert all(0.0 <= score.f1 <= 1.0 for score in report.per_class)
    assert "precision" in report.text and "purple" in report.text


def test_probe_cli_with_a_given_test_split(tmp_path, capsys, colours, demo_model_dir):
    test = _colour_folders(tmp_path / "test", 36, seed=1)
    (test / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = ["probe", str(colours), "-m", str(demo_model_dir), "--test", str(test)]
    assert main([*args, "--workers", "0", "--json", "--layer", "pooled"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["n_train"], report["n_test"], report["failed"]) == (72, 36, 1)
    assert report["accuracy"] >= 0.85 and report["representation"] == "pooled"
    assert set(report["per_class"]) == set(COLOURS)
    assert report["per_class"]["red"]["support"] == 6


def test_one_class_is_refused(tmp_path, demo_encoder):
    from xmodal.pipelines.features.probe import run_probe

    _colour_folders(tmp_path, 6, seed=0)
    for folder in sorted(tmp_path.iterdir())[1:]:
        for image in folder.iterdir():
            image.unlink()
        folder.rmdir()
    with pytest.raises(XmodalError, match=r"holds 1 class folder\(s\); a probe needs at least 2"):
        run_probe(demo_encoder, tmp_path)


def test_too_few_images_are_refused(tmp_path, capsys, demo_model_dir):
    _colour_folders(tmp_path, 36, seed=0)  # 6 per class
    for extra in sorted((tmp_path / "red").iterdir())[1:]:
        extra.unlink()
    args = ["probe", str(tmp_path), "-m", str(demo_model_dir), "--workers", "0"]
    assert main(args) == 1
    assert "at least 2 decodable images per class; too few in: red (1)" in capsys.readouterr().err
    (tmp_path / "red" / "0000.png").unlink()
    (tmp_path / "red").rmdir()
    assert main([*args, "--test-size", "0.1"]) == 1
    assert "cannot be split so that both parts hold every one of the 5" in capsys.readouterr().err


def test_missing_scikit_learn_names_the_extra(monkeypatch, colours, demo_encoder):
    from xmodal.pipelines.features.probe import run_probe

    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(XmodalError, match=r"pip install 'xmodal\[probe\]'"):
        run_probe(demo_encoder, colours)


def test_class_folders_of_symlinks_say_why_they_hold_no_images(tmp_path, capsys, demo_model_dir):
    """Links leading out of their class folder are skipped by default, as ``index`` does; the
    error says so and --follow-links takes them."""
    real = _colour_folders(tmp_path / "real", 36, seed=0)
    linked = tmp_path / "linked"
    links = 0
    for folder in sorted(real.iterdir()):
        (linked / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir()):
            (linked / folder.name / image.name).symlink_to(image)
            links += 1
    args = ["probe", str(linked), "-m", str(demo_model_dir), "--workers", "0"]
    assert main(args) == 1
    too_few = ", ".join(f"{name} (0)" for name in sorted(COLOURS))
    assert capsys.readouterr().err == (
        f"xmodal: error: the dataset needs at least 2 decodable images per class; too few in: "
        f"{too_few}; {links} symlinks pointing outside their class folder were skipped "
        "(pass --follow-links to take them)\n"
    )
    assert main([*args, "--follow-links", "--json", "--precision", "fp32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_train"] + report["n_test"] == links
