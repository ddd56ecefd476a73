"""GET /api/duplicates and /api/outliers behind the token guard, the page's tabs, and the CLI
end to end on a collection indexed with a tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from app_helpers import TOKEN, FakeRetriever
from curation_helpers import build_planted

from xmodal.app import AppConfig
from xmodal.app.curation import duplicates_html, outliers_html
from xmodal.cli import main
from xmodal.index import Collection


class PlantedRetriever(FakeRetriever):
    def __init__(self, collection: Collection) -> None:
        super().__init__()
        self.collection = collection


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory):
    with Collection.open(build_planted(tmp_path_factory.mktemp("app"))) as collection:
        yield PlantedRetriever(collection)


@pytest.fixture(scope="module")
def client(retriever):
    from starlette.testclient import TestClient

    from xmodal.app.server import create_app

    app = create_app(retriever, config=AppConfig(auth_token=TOKEN))
    with TestClient(app) as test_client:
        yield test_client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_duplicates_route_returns_groups_with_image_urls(client) -> None:
    response = client.get("/api/duplicates?threshold=0.95&keep=first", headers=AUTH)
    assert response.status_code == 200
    groups = response.json()["groups"]
    assert [g["kind"] for g in groups] == ["near", "near", "exact"]
    keeper = groups[0]["members"][0]
    assert keeper == {
        "id": 2,
        "path": "/p/b/first.jpg",
        "score": 1.0,
        "image_url": "http://testserver/api/image/2",
    }
    assert groups[0]["keep"] == "/p/b/first.jpg"
    body = response.content.decode("utf-8")  # strict UTF-8
    paths = [m["path"] for g in json.loads(body)["groups"] for m in g["members"]]
    assert "/p/b/caf\\xe9.jpg" in paths
    narrowed = client.get("/api/duplicates", params={"where": "path:/p/a/*"}, headers=AUTH)
    assert [len(g["members"]) for g in narrowed.json()["groups"]] == [2]


def test_curation_routes_need_the_token_and_check_their_input(client) -> None:
    assert client.get("/api/duplicates").status_code == 401
    assert client.get("/api/outliers").status_code == 401
    bad = client.get("/api/duplicates?threshold=2", headers=AUTH)
    assert bad.status_code == 400
    assert bad.json() == {"detail": "threshold must be in (-1, 1], got 2"}
    bad = client.get("/api/outliers?top=0", headers=AUTH)
    assert bad.status_code == 400 and bad.json() == {"detail": "top must be at least 1, got 0"}


def test_outliers_route_lists_neighbours(client) -> None:
    response = client.get("/api/outliers?top=3&k=2", headers=AUTH)
    assert response.status_code == 200
    rows = response.json()["outliers"]
    assert len(rows) == 3 and len(rows[0]["neighbours"]) == 2
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    assert rows[0]["image_url"].startswith("http://testserver/api/image/")


def test_page_fragments_show_groups_side_by_side_by_id(retriever) -> None:
    page = duplicates_html(retriever, 0.95, "largest", "")
    assert page.count("<div><h4>") == 3 and 'src="api/image/3?size=160"' in page
    assert "caf\\xe9.jpg" in page and "/p/" not in page.split("</p>", 1)[1]  # names, no folders
    assert duplicates_html(retriever, 1.5, "largest", "") == (
        '<p class="xmodal-error"><b>Error:</b> threshold must be in (-1, 1], got 1.5</p>'
    )
    listed = outliers_html(retriever, 2, 3, None)
    assert listed.count("<div><h4>") == 2 and listed.count("<figure") == 2 * 4


def test_cli_end_to_end_on_a_tiny_model_collection(
    tmp_path: Path, tiny_clip_dir: Path, captioned_photos: list[Path], capsys
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in captioned_photos[:6]:
        shutil.copy(photo, folder / photo.name)
    shutil.copy(captioned_photos[0], folder / "copy-of-first.jpg")  # the same bytes
    col = tmp_path / "col"
    args = ["index", folder, "-c", col, "--model", tiny_clip_dir, "--workers", "0"]
    assert main([str(a) for a in args]) == 0
    capsys.readouterr()
    assert main(["duplicates", "-c", str(col), "--threshold", "1.0", "--json"]) == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert len(groups) == 1 and groups[0]["kind"] == "exact"
    names = sorted(Path(m["path"]).name for m in groups[0]["members"])
    assert names == sorted([captioned_photos[0].name, "copy-of-first.jpg"])
    assert main(["outliers", "-c", str(col), "--top", "3", "--k", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["outliers"]
    assert len(rows) == 3 and all(len(r["neighbours"]) == 2 for r in rows)
