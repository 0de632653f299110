"""`lcoemb serve --index`: search over an index by API and by the page at `/`, on a real server.

One index of the embedded default (LCO-Mini) over the generated demo folder, whose files each
come with a text query that finds them, is served by a real process on 127.0.0.1 with an API
key; the page is driven in the system's Chromium. The quick checks (no index, another model's
index) need no model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from lcoemb.index import Index
from lcoemb.index.index import IndexSettingsError
from lcoemb.serving import ServeConfig, create_app
from lcoemb.synthetic import write_demo_folder
from tests.test_serving import API_KEY, _free_port, audio_part, wait_until_ready

CHROMIUM = "/usr/bin/chromium"


@dataclass
class Demo:
    """The demo folder's files with their queries (per modality), and the index over it."""

    root: Path
    files: dict[str, list[tuple[Path, str]]]
    index: Path
    ids: dict[str, int]  # path relative to the root -> id

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    folder = tmp_path_factory.mktemp("search-demo")
    files = write_demo_folder(folder / "demo", n=3)
    index = Index.build(folder / "demo", folder / "idx", device="cpu")
    ids = {row["path"]: row["id"] for row in index.rows.select(["path", "id"]).to_pylist()}
    return Demo(folder / "demo", files, folder / "idx", ids)


def _serve(index: Path, log_path: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "lcoemb.cli", "serve", "--model", "lco-mini", "--index", str(index),
        "--device", "cpu", "--port", str(port),
    ]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1", "LCOEMB_API_KEY": API_KEY}
    with open(log_path, "w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.fixture(scope="module")
def server(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A client (with the API key) of ``lcoemb serve --index`` over the demo index."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("search-serve-log") / "server.log"
    process = _serve(demo.index, log_path, port)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as client:
        try:
            wait_until_ready(client, process, log_path)
            yield client
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
    assert code in (0, -signal.SIGTERM), log_path.read_text()


def test_without_an_index_search_is_404_and_the_page_says_how_to_add_one() -> None:
    app = create_app(ServeConfig(model="lco-mini", api_key=API_KEY))
    client = TestClient(app, base_url="http://127.0.0.1")  # no lifespan: no model loads
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert client.post("/v1/search", json={"query": "a cat"}).status_code == 401
    response = client.post("/v1/search", json={"query": "a cat"}, headers=headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "index_not_found"
    assert client.get("/v1/media/0", headers=headers).status_code == 404
    page = client.get("/")
    assert page.status_code == 200 and "--index" in page.text and "<input" not in page.text


@pytest.mark.slow
def test_search_by_text_finds_each_image_and_by_example_its_own_audio(
    server: httpx.Client, demo: Demo
) -> None:
    found = []
    images = {demo.rel(path) for path, _ in demo.files["image"]}
    for path, query in demo.files["image"]:
        response = server.post("/v1/search", json={"query": query, "k": 3, "modality": ["image"]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "list" and body["model"] == "lco-mini"
        data = body["data"]
        assert [hit["rank"] for hit in data] == [1, 2, 3]
        assert {hit["modality"] for hit in data} == {"image"}
        assert {hit["path"] for hit in data} == images  # k=3 of the 3 images: each once
        for hit in data:
            assert hit["id"] == demo.ids[hit["path"]]
            assert hit["media_url"] == f"/v1/media/{hit['id']}"
        assert data[0]["score"] >= data[1]["score"] >= data[2]["score"]
        found.append(data[0]["path"] == demo.rel(path))
    # LCO-Mini's caption->image R@1 is 0.3-0.6 on held-out scenes: the shipped adapter puts 2 of
    # these 3 first (the previous one 3); fewer would mean search ranks by something else
    assert sum(found) >= 2, found
    # a list of content parts, as /v1/embeddings takes them: an indexed clip finds itself
    speech = demo.files["audio"][1][0]
    response = server.post("/v1/search", json={"query": [audio_part(speech)], "k": 12})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 12 and data[0]["path"] == demo.rel(speech)
    assert data[0]["score"] == pytest.approx(1.0, abs=0.02)
    notes = [hit for hit in data if hit["modality"] == "text"]
    assert notes and all(hit["text"] and "media_url" not in hit for hit in notes)

    for body, param in (
        ({"query": "a cat", "k": 0}, "k"),
        ({"query": "a cat", "modality": ["smell"]}, "modality"),
        ({"query": 5}, "query"),
        ({"query": [{"type": "hologram"}]}, None),
    ):
        response = server.post("/v1/search", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param, body
    anonymous = httpx.post(str(server.base_url.join("/v1/search")), json={"query": "a"})
    assert anonymous.status_code == 401


@pytest.mark.slow
def test_media_serves_indexed_files_by_id_only(server: httpx.Client, demo: Demo) -> None:
    image = demo.files["image"][0][0]
    response = server.get(f"/v1/media/{demo.ids[demo.rel(image)]}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == image.read_bytes()
    speech = demo.files["audio"][0][0]
    response = server.get(f"/v1/media/{demo.ids[demo.rel(speech)]}")
    assert response.status_code == 200 and response.content == speech.read_bytes()
    assert response.headers["content-type"] in ("audio/x-wav", "audio/wav")
    note = demo.rel(demo.files["text"][0][0])
    for item in (str(demo.ids[note]), "999999", "-1", "1e3", "9" * 40):
        response = server.get(f"/v1/media/{item}")
        assert response.status_code == 404, item
        assert response.json()["error"]["code"] == "media_not_found", item
    # a path (even encoded) is not an id: it matches no route, so no file can be named by one
    assert server.get("/v1/media/%2E%2E%2Fmanifest.json").status_code == 404
    unauthorized = httpx.get(str(server.base_url.join(f"/v1/media/{demo.ids[demo.rel(image)]}")))
    assert unauthorized.status_code == 401


@pytest.mark.slow
def test_an_index_of_another_model_is_refused_at_startup(demo: Demo, tmp_path: Path) -> None:
    other = tmp_path / "other-model"
    shutil.copytree(demo.index, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(manifest | {"model": "lco-mini-base"}))
    with pytest.raises(IndexSettingsError, match="another model"):
        create_app(ServeConfig(model="lco-mini", index=other))
    process = _serve(other, tmp_path / "server.log", _free_port())
    assert process.wait(timeout=120) == 2
    log = (tmp_path / "server.log").read_text()
    assert "another model or adapter" in log and "'lco-mini-base' (the index)" in log
    assert "Uvicorn running" not in log  # refused before serving (and before loading a model)


def test_the_served_model_computes_in_the_index_dtype_unless_told(
    demo: Demo, tmp_path: Path
) -> None:
    """An index built in bf16 (on a GPU, say) and served where the default is float32: the
    queries are embedded in bf16, as its documents were, unless --dtype says otherwise."""
    bf16 = tmp_path / "bf16-index"
    shutil.copytree(demo.index, bf16)
    manifest = json.loads((bf16 / "manifest.json").read_text())
    (bf16 / "manifest.json").write_text(json.dumps(manifest | {"dtype": "bfloat16"}))
    served = create_app(ServeConfig(model="lco-mini", index=bf16))  # no lifespan: no model load
    assert served.state.lcoemb.config.dtype == "bfloat16"
    told = create_app(ServeConfig(model="lco-mini", index=bf16, dtype="float32"))
    assert told.state.lcoemb.config.dtype == "float32"
    assert create_app(ServeConfig(model="lco-mini")).state.lcoemb.config.dtype is None


@pytest.mark.slow
def test_search_page_in_chromium(server: httpx.Client, demo: Demo, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    image, caption = demo.files["image"][2]
    speech = demo.files["audio"][0][0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(str(server.base_url))
            page.fill("#api-key", API_KEY)  # the server has a key: the page asks for it
            page.fill("#query", caption)
            page.select_option("#modality", "image")
            page.click("button[type=submit]")
            page.wait_for_selector("#results li img")
            first = page.locator("#results li").first
            assert first.get_attribute("data-path") == demo.rel(image)
            media_url = f"/v1/media/{demo.ids[demo.rel(image)]}"
            assert first.get_attribute("data-media-url") == media_url
            assert first.locator(".rank").inner_text() == "#1"
            assert "score" in first.locator(".score").inner_text()
            # the thumbnail really loaded (fetched with the key, shown from a blob: URL)
            page.wait_for_function(
                "() => { const img = document.querySelector('#results li img');"
                " return img.complete && img.naturalWidth > 0; }"
            )

            page.fill("#query", "")
            page.select_option("#modality", "")
            page.set_input_files("#file", str(speech))
            page.wait_for_function(
                "path => document.querySelector('#results li')?.dataset.path === path",
                arg=demo.rel(speech),
            )
            results = page.locator("#results li")
            assert results.count() == 10
            assert results.first.locator("audio[controls]").count() == 1
            assert page.locator("#results li[data-modality=video] video[controls]").count() >= 1
            assert page.locator("#results li[data-modality=text] blockquote").count() >= 1
            assert "error" not in (page.get_attribute("#status", "class") or "")
            page.screenshot(path=str(tmp_path / "search-page.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "search-page.png").stat().st_size > 0
