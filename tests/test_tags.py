"""Zero-shot tags: `xmodal tag`, `xmodal classify`, tag:LABEL filters in CLI, API and Retriever."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xmodal.demo.world import SHAPES, make_world
from xmodal.errors import FilterError
from xmodal.index import Collection
from xmodal.index.records import Record
from xmodal.pipelines.tagging import TagError, TagSettings, load_labels, load_templates
from xmodal.pipelines.tagging.templates import IMAGENET_TEMPLATES


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "xmodal.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


class CountingEncoder:
    """The real encoder, counting what it is asked to encode."""

    def __init__(self, encoder) -> None:
        self.inner, self.spec = encoder, encoder.spec
        self.texts: list[int] = []
        self.images = 0

    def encode_texts(self, texts):
        self.texts.append(len(texts))
        return self.inner.encode_texts(texts)

    def encode_images(self, images):
        self.images += len(images)
        return self.inner.encode_images(images)

    def zero_shot_head(self):
        return self.inner.zero_shot_head()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("tag-world")
    return root, make_world(root / "world", 40, seed=11)


@pytest.fixture(scope="module")
def encoder(demo_model_dir):
    from xmodal.encoders import load_encoder

    return load_encoder(demo_model_dir, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def files(world) -> dict[str, Path]:
    root = world[0]
    (root / "shapes.txt").write_text("# the demo world's shapes\ncircle\nsquare\n\ntriangle\n")
    (root / "a.txt").write_text("a {}\n")
    return {"labels": root / "shapes.txt", "templates": root / "a.txt"}


def _collection(path: Path, encoder, items) -> Collection:
    collection = Collection.create(path, encoder.spec.to_dict())
    vectors = encoder.encode_images([str(item.path) for item in items])
    collection.add(vectors, [Record(str(item.path), caption=item.caption) for item in items])
    collection.commit()
    return collection


@pytest.fixture(scope="module")
def tagged(world, encoder, files, tmp_path_factory) -> Path:
    """A collection of the first 32 world images, tagged with the shapes."""
    from xmodal.pipelines.tagging import tag_collection

    path = tmp_path_factory.mktemp("tagged") / "coll"
    with _collection(path, encoder, world[1][:32]) as collection:
        settings = TagSettings(SHAPES, load_templates(str(files["templates"])), 1, 0.0)
        tag_collection(encoder, collection, settings)
    return path


def test_tags_are_mostly_right_and_stored_with_probabilities(tagged, world) -> None:
    truth = {str(item.path): item.attributes.shape for item in world[1][:32]}
    with Collection.open(tagged) as collection:
        ids = collection.ids_for_paths(truth)
        tags = collection.tags_for(list(ids.values()))
    assert set(tags) == set(ids.values())  # top 1, no bar: every item has exactly one tag
    assert all(len(t) == 1 and 1 / 3 < t[0].prob <= 1 for t in tags.values())
    right = sum(tags[ids[path]][0].label == shape for path, shape in truth.items())
    assert right / len(truth) >= 0.7  # chance is 1/3; the demo model scores ~0.8 here


def test_where_tag_filters_in_the_retriever_and_the_cli(tagged, encoder) -> None:
    from xmodal.pipelines.search import Retriever

    with Collection.open(tagged) as collection:
        circles = set(collection.ids_where("tag:circle").tolist())
        hits = Retriever(encoder, collection).search("a red shape", k=50, where="tag:Circle")
        assert circles and {h.id for h in hits} == circles  # labels match in any case
        assert all(h.tags[0].label == "circle" for h in hits)
    done = _cli(
        "search",
        "red",
        "-c",
        str(tagged),
        "--where",
        "tag:circle",
        "-k",
        "50",
        "--json",
        "--precision",
        "fp32",
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["results"]
    assert {r["id"] for r in rows} == circles and rows[0]["tags"][0]["label"] == "circle"


def test_where_tag_in_the_api(tagged, encoder) -> None:
    from starlette.testclient import TestClient

    from xmodal.app import AppConfig
    from xmodal.app.server import create_app
    from xmodal.pipelines.search import Retriever

    with Collection.open(tagged) as collection:
        squares = set(collection.ids_where("tag:square").tolist())
        app = create_app(Retriever(encoder, collection), config=AppConfig(max_k=50))
        with TestClient(app) as client:
            body = {"text": "a shape", "k": 50, "where": "tag:square"}
            response = client.post("/api/search", json=body)
    assert response.status_code == 200
    rows = response.json()["results"]
    assert {r["id"] for r in rows} == squares
    assert all(r["tags"][0]["label"] == "square" for r in rows)


def test_hit_labels_on_the_page_show_tags(tagged, encoder) -> None:
    from xmodal.app.handlers import hit_label
    from xmodal.pipelines.search import Retriever

    with Collection.open(tagged) as collection:
        hit = Retriever(encoder, collection).search("a shape", k=1)[0]
    assert hit_label(hit).endswith(f" · tags: {hit.tags[0].label} {hit.tags[0].prob:.2f}")


def test_rerun_tags_only_new_items_and_new_labels_retag_all(world, encoder, files, tmp_path):
    from xmodal.pipelines.tagging import tag_collection

    items = world[1]
    settings = TagSettings(SHAPES, ("a {}",), 2, 0.0)
    with _collection(tmp_path / "c", encoder, items[:30]) as collection:
        counting = CountingEncoder(encoder)
        first = tag_collection(counting, collection, settings)
        assert (first.tagged, first.already_tagged, first.retagged_all) == (30, 0, False)
        collection.add(
            encoder.encode_images([str(i.path) for i in items[30:]]),
            [Record(str(i.path)) for i in items[30:]],
        )
        collection.commit()
        second = tag_collection(counting, collection, settings)
        assert (second.tagged, second.already_tagged, second.retagged_all) == (10, 30, False)
        assert counting.images == 0  # tags come from the stored embeddings
        assert counting.texts == [3, 3]  # one prompt per label and template, per run
        third = tag_collection(counting, collection, settings)
        assert third.tagged == 0 and counting.texts == [3, 3]  # nothing new: no model work
        generation = collection.generation
        colours = TagSettings(("red", "blue", "green"), ("a {}",), 1, 0.0)
        fourth = tag_collection(counting, collection, colours)
        assert (fourth.tagged, fourth.retagged_all) == (40, True)
        assert collection.generation == generation + 1
        assert not collection.ids_where("tag:circle").size  # old labels are gone
        assert collection.ids_where("tag:red").size


def test_removed_or_replaced_items_lose_their_tags(tagged, tmp_path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tagged, copy)
    with Collection.open(copy, writable=True) as collection:
        first = int(collection.ids_where("tag:circle")[0])
        collection.remove([first])
        collection.commit()
        assert first not in collection.ids_where("tag:circle")
        assert first not in collection.untagged_ids()
        assert collection.tags_for([first]) == {}


def test_classify_json_shape(world, files, demo_model_dir) -> None:
    paths = [str(item.path) for item in world[1][:2]]
    done = _cli(
        "classify",
        *paths,
        "--labels",
        str(files["labels"]),
        "-m",
        str(demo_model_dir),
        "--templates",
        "single",
        "--precision",
        "fp32",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert [r["path"] for r in results] == paths
    for result in results:
        assert set(result) == {"path", "labels"}
        assert {lab["label"] for lab in result["labels"]} == set(SHAPES)
        probs = [lab["prob"] for lab in result["labels"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)


def test_the_default_templates_are_the_clip_papers_eighty() -> None:
    assert len(IMAGENET_TEMPLATES) == 80 == len(set(IMAGENET_TEMPLATES))
    assert all(t.count("{}") == 1 for t in IMAGENET_TEMPLATES)
    assert IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and "itap of a {}." in IMAGENET_TEMPLATES
    assert load_templates("single") == ("a photo of a {}.",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "label file {p} has no labels; write one label per line"),
        ("# only a comment\n\n", "label file {p} has no labels; write one label per line"),
        (
            "dog\n",
            "label file {p} has only one label ('dog'); zero-shot tagging needs at least two to "
            "choose between",
        ),
        ("dog\ncat\nDog\n", "label file {p} lists 'Dog' twice (lines 1 and 3)"),
    ],
)
def test_bad_label_files_are_one_line_errors(tmp_path, content, message) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(content)
    with pytest.raises(TagError) as caught:
        load_labels(path)
    assert str(caught.value) == message.format(p=path)


def test_bad_label_file_on_the_cli_changes_nothing(tagged, tmp_path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("dog\n")
    before = sorted(p.name for p in tagged.iterdir())
    done = _cli("tag", "-c", str(tagged), "--labels", str(path))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"xmodal: error: label file {path} has only one label ('dog'); zero-shot tagging needs "
        "at least two to choose between"
    )
    assert sorted(p.name for p in tagged.iterdir()) == before


def test_template_file_needs_a_placeholder(tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a photo of {}\na photo\n")
    with pytest.raises(TagError) as caught:
        load_templates(str(path))
    assert str(caught.value) == (
        f"template file {path} line 2 needs exactly one {{}} where the label goes: 'a photo'"
    )


def test_tag_filter_on_a_never_tagged_collection_says_what_to_do(tmp_path) -> None:
    rows = np.eye(4, dtype=np.float32)
    with Collection.create(tmp_path / "c", {"model_id": "m", "revision": "r", "dim": 4}) as c:
        c.add(rows, [Record(f"/x/{i}.jpg") for i in range(4)])
        c.commit()
        with pytest.raises(FilterError) as caught:
            c.search(rows[:1], 2, where="tag:dog")
    assert str(caught.value) == (
        "filter 'tag:dog': this collection has no tags yet; run `xmodal tag -c DIR --labels "
        "FILE` first"
    )
