"""``lcoemb index``: build, search, update and resume over a generated mixed folder, on the tiny
random Qwen2.5-Omni model (mechanics) and on the embedded default LCO-Mini (retrieval)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from lcoemb import OmniEncoder, devices
from lcoemb.cli import main
from lcoemb.index import Index, IndexSettingsError, store
from lcoemb.inputs import ImageRef
from tests.conftest import tone, write_video


def _image(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    PIL.Image.fromarray(rng.integers(0, 255, (42, 56, 3), dtype=np.uint8)).save(path)
    return path


def _mixed_folder(root: Path) -> Path:
    """Two images, a speech-like WAV, a clip, two text files (one long: several passages), a
    corrupt image, a zero-length WAV and a file of an unknown type."""
    (root / "photos").mkdir(parents=True)
    (root / "sounds").mkdir()
    _image(root / "photos" / "red.png", 1)
    _image(root / "photos" / "blue.jpg", 2)
    sf.write(root / "sounds" / "tone.wav", tone(1.0, 16_000)[0], 16_000)
    sf.write(root / "sounds" / "silent.wav", np.zeros(0, np.float32), 16_000)
    write_video(root / "clip.mp4", seconds=2, fps=5)
    (root / "notes.md").write_text("# Notes\n\nA short note about a lighthouse by the sea.\n")
    (root / "long.txt").write_text(" ".join(f"Sentence {i} is about boats." for i in range(60)))
    (root / "photos" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (root / "data.xyz").write_text("not indexed")
    return root


@pytest.fixture(scope="module")
def tiny(omni_path: Path) -> OmniEncoder:
    """The tiny model in float32: engines and resumed builds must agree to 1e-6."""
    return OmniEncoder.from_pretrained(omni_path, device="cpu", dtype="float32")


def _build(source: Path, out: Path, encoder: OmniEncoder, model: Path, **kw) -> Index:
    return Index.build(source, out, model=model, encoder=encoder, shard_size=3, **kw)


def _contents(path: Path) -> tuple[list[dict], np.ndarray]:
    rows, vectors, _ = store.read_rows(path)
    return rows.drop(["mtime"]).to_pylist(), vectors


def test_mixed_folder_builds_with_counts_errors_and_plain_files(tmp_path, tiny, omni_path):
    src = _mixed_folder(tmp_path / "src")
    index = _build(src, tmp_path / "idx", tiny, omni_path)
    summary = index.summary
    assert index.modality_counts() == {"image": 2, "audio": 1, "video": 1, "text": 3}
    assert summary.items == 7 and summary.embedded == 7
    assert summary.skipped == {".xyz": 1}
    assert summary.errors == 2
    errors = [json.loads(line) for line in (tmp_path / "idx" / "errors.jsonl").open()]
    assert sorted(e["path"] for e in errors) == ["photos/broken.png", "sounds/silent.wav"]
    assert all(e["error"] for e in errors)

    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["model"] == str(omni_path.resolve()) and manifest["adapter"] is None
    assert manifest["dimension"] == tiny.embedding_dim and manifest["normalized"] is True
    assert manifest["dtype"] == "float32"  # queries are embedded as the documents were
    assert manifest["items"] == 7 and manifest["status"] == "complete"
    # shards are plain Parquet: one row per item, the vector a fixed-size float32 list
    table = pq.read_table(tmp_path / "idx" / "shards")
    assert table.num_rows == 7
    assert set(table.column_names) >= {"id", "path", "modality", "content_hash", "vector"}
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    long_rows = [r for r in table.to_pylist() if r["path"] == "long.txt"]
    text = (src / "long.txt").read_text()
    assert len(long_rows) == 2 and all(text[r["start"] : r["end"]] == r["text"] for r in long_rows)

    # search by example: an indexed image finds itself first, with cosine 1
    (hits,) = index.search([ImageRef(src / "photos" / "blue.jpg")], k=3)
    assert hits[0].path == "photos/blue.jpg" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    (only,) = Index.load(tmp_path / "idx", encoder=tiny).search(
        ["boats"], k=10, modalities=["audio", "video"]
    )
    assert {h.modality for h in only} == {"audio", "video"} and len(only) == 2


def test_strict_build_stops_at_the_first_unreadable_file(tmp_path, tiny, omni_path):
    src = _mixed_folder(tmp_path / "src")
    with pytest.raises(ValueError, match=r"photos/broken\.png"):
        _build(src, tmp_path / "idx", tiny, omni_path, strict=True)


def test_update_embeds_only_new_and_changed_files_and_drops_deleted(tmp_path, tiny, omni_path):
    src = _mixed_folder(tmp_path / "src")
    index = _build(src, tmp_path / "idx", tiny, omni_path)
    before = {h["path"]: h["id"] for h in index.rows.select(["path", "id"]).to_pylist()}
    encoded: list[int] = []
    encode = tiny.encode

    def counting(items, *args, **kwargs):
        encoded.append(len(items))
        return encode(items, *args, **kwargs)

    tiny.encode = counting
    try:
        _image(src / "photos" / "red.png", 99)  # changed
        (src / "clip.mp4").unlink()  # deleted
        _image(src / "photos" / "green.png", 3)  # new
        (src / "photos" / "broken.png").unlink()  # a bad file gone: its error goes too
        summary = Index.load(tmp_path / "idx", encoder=tiny).update()
    finally:
        tiny.encode = encode
    assert sum(encoded) == 2  # only red.png and green.png reached the model
    assert summary.embedded == 2 and summary.removed == 2 and summary.reused == 5
    assert summary.errors == 1  # silent.wav: unchanged, still bad, not retried
    after = Index.load(tmp_path / "idx", encoder=tiny)
    paths = {h["path"]: h["id"] for h in after.rows.select(["path", "id"]).to_pylist()}
    assert "clip.mp4" not in paths and "photos/green.png" in paths
    assert paths["photos/blue.jpg"] == before["photos/blue.jpg"]  # kept, same id
    assert paths["photos/red.png"] not in before.values()  # re-embedded under a fresh id
    (hits,) = after.search([ImageRef(src / "photos" / "red.png")], k=1)
    assert hits[0].path == "photos/red.png" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    errors = [json.loads(line) for line in (tmp_path / "idx" / "errors.jsonl").open()]
    assert [e["path"] for e in errors] == ["sounds/silent.wav"]


def test_update_and_build_refuse_another_model_or_a_finished_index(
    tmp_path, tiny, omni_path, vl_path, capsys
):
    src = _mixed_folder(tmp_path / "src")
    _build(src, tmp_path / "idx", tiny, omni_path)
    with pytest.raises(IndexSettingsError, match="another model or adapter"):
        Index.load(tmp_path / "idx", encoder=tiny).update(model=vl_path)
    assert main(["index", "update", str(tmp_path / "idx"), "--model", str(vl_path)]) == 2
    assert "another model or adapter" in capsys.readouterr().err
    with pytest.raises(IndexSettingsError, match="already holds a finished index"):
        _build(src, tmp_path / "idx", tiny, omni_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(IndexSettingsError, match="holds no lcoemb index"):
        _build(src, tmp_path / "other", tiny, omni_path)


def _cli_build(src: Path, out: Path, model: Path) -> list[str]:
    return [
        sys.executable, "-m", "lcoemb.cli", "index", "build", "--model", str(model),
        "--dtype", "float32", "--device", "cpu", "--input", str(src), "--output", str(out),
        "--shard-size", "2", "--batch-size", "2", "--quiet",
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_during_a_build_then_the_same_command_equals_an_uninterrupted_build(
    tmp_path, omni_path
):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        (src / f"note-{i:02d}.txt").write_text(f"note {i}: " + "words about the sea " * (i % 7 + 1))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli_build(src, out, omni_path), env=env, cwd=Path.cwd())
    deadline = time.monotonic() + 120
    while not store.list_shards(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(store.list_shards(out))
    assert 0 < written < 30, "the kill must land mid-build"
    assert store.read_manifest(out)["status"] == "building"

    resumed = subprocess.run(
        _cli_build(src, out, omni_path), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"kept {2 * written} unchanged" in resumed.stdout  # the written shards were reused
    whole = tmp_path / "whole"
    done = subprocess.run(
        _cli_build(src, whole, omni_path), env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows_a, vectors_a = _contents(out)
    rows_b, vectors_b = _contents(whole)
    assert rows_a == rows_b
    np.testing.assert_allclose(vectors_a, vectors_b, atol=1e-6)


@pytest.mark.slow
def test_ray_engine_builds_the_local_engines_index(tmp_path, tiny, omni_path):
    src = _mixed_folder(tmp_path / "src")
    _build(src, tmp_path / "local", tiny, omni_path)
    ray_index = Index.build(
        src,
        tmp_path / "ray",
        model=omni_path,
        shard_size=3,
        engine="ray",
        device="cpu",
        dtype="float32",
    )
    assert ray_index.summary.embedded == 7 and ray_index.summary.errors == 2
    rows_local, vectors_local = _contents(tmp_path / "local")
    rows_ray, vectors_ray = _contents(tmp_path / "ray")
    assert [r["id"] for r in rows_ray] == [r["id"] for r in rows_local]
    assert rows_ray == rows_local
    np.testing.assert_allclose(vectors_ray, vectors_local, atol=1e-6)


def test_cli_search_prints_a_table_and_json(tmp_path, omni_path, capsys, monkeypatch):
    # a CPU without fast bf16: with no --dtype the build runs, and records, float32
    monkeypatch.setattr(devices, "fast_bf16", lambda device: False)
    src = _mixed_folder(tmp_path / "src")
    out = tmp_path / "idx"
    args = ["index", "build", "--model", str(omni_path), "--input", str(src)]
    assert main([*args, "--output", str(out), "--quiet", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "items in the index: 7" in printed and "errors: 2" in printed
    assert json.loads((out / "manifest.json").read_text())["dtype"] == "float32"
    query = ["index", "search", str(out), "--image", str(src / "photos" / "red.png"), "-k", "2"]
    assert main(query) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["rank", "score", "modality", "path"]
    assert table[1].split()[2:] == ["image", "photos/red.png"]
    assert main([*query, "--json", "--modality", "text"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in results] == [1, 2]
    assert all(r["modality"] == "text" and r["text"] for r in results)
    assert main(["index", "search", str(out)]) == 2
    assert "give a text QUERY" in capsys.readouterr().err


@pytest.mark.slow
def test_text_search_finds_each_modality_on_the_embedded_default(tmp_path):
    """The README's demo: LCO-Mini finds generated images, speech, clips and notes by text."""
    from lcoemb.synthetic import write_demo_folder

    files = write_demo_folder(tmp_path / "demo", n=4)
    index = Index.build(tmp_path / "demo", tmp_path / "idx", device="cpu")
    assert index.modality_counts() == {"image": 4, "audio": 4, "video": 4, "text": 4}
    for modality, pairs in files.items():
        queries = [query for _, query in pairs]
        top = [hits[0].path for hits in index.search(queries, k=1, modalities=[modality])]
        expected = [str(path.relative_to(tmp_path / "demo")) for path, _ in pairs]
        found = sum(t == e for t, e in zip(top, expected))
        assert found >= 1, (modality, top, expected)


def test_a_resumed_or_updated_build_keeps_the_dtype_of_its_shards(
    tmp_path, tiny, omni_path, monkeypatch
):
    """An index holds one precision: a build interrupted in bf16 (on a machine with fast bf16,
    say) resumes in bf16 where the default is float32, and another dtype is refused."""
    monkeypatch.setattr(devices, "fast_bf16", lambda device: False)  # float32 by default
    src = _mixed_folder(tmp_path / "src")
    out = tmp_path / "idx"
    bf16 = OmniEncoder.from_pretrained(omni_path, device="cpu", dtype="bfloat16")
    encode = bf16.encode
    calls: list[int] = []

    def interrupted(items, *args, **kwargs):
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(items, *args, **kwargs)

    bf16.encode = interrupted
    with pytest.raises(KeyboardInterrupt):
        _build(src, out, bf16, omni_path)
    assert store.shard_dtypes(out) == {"bfloat16": [0]}

    with pytest.raises(IndexSettingsError, match=r"computed in bfloat16.*compute in float32"):
        _build(src, out, tiny, omni_path)  # an encoder of another dtype
    with pytest.raises(IndexSettingsError, match=r"computed in bfloat16.*compute in float32"):
        Index.build(src, out, model=omni_path, shard_size=3, device="cpu", dtype="float32")
    assert store.shard_dtypes(out) == {"bfloat16": [0]}  # nothing was written by the refusals

    index = Index.build(src, out, model=omni_path, shard_size=3, device="cpu")  # no dtype
    assert index.summary.reused == 3 and index.manifest["dtype"] == "bfloat16"
    assert set(store.shard_dtypes(out)) == {"bfloat16"}
    fresh = Index.build(src, tmp_path / "whole", model=omni_path, encoder=bf16, shard_size=3)
    bf16.encode = encode
    rows_a, vectors_a = _contents(out)
    rows_b, vectors_b = _contents(tmp_path / "whole")
    assert rows_a == rows_b and fresh.manifest["dtype"] == "bfloat16"
    np.testing.assert_allclose(vectors_a, vectors_b, atol=1e-6)

    _image(src / "photos" / "green.png", 3)  # new: update must embed it in bf16 too
    with pytest.raises(IndexSettingsError, match=r"computed in bfloat16.*compute in float32"):
        Index.load(out).update(device="cpu", dtype="float32")
    (src / "clip.mp4").unlink()  # its shard is rewritten by update, and keeps its dtype
    summary = Index.load(out).update(device="cpu")
    assert summary.embedded == 1 and summary.removed == 1
    assert set(store.shard_dtypes(out)) == {"bfloat16"}

    dim = index.manifest["dimension"]  # a stray shard of another dtype is named
    store.write_shard(out, 99, [], [], np.zeros((0, dim)), dtype="float32")
    _image(src / "photos" / "yellow.png", 4)
    with pytest.raises(store.IndexFormatError, match=r"different dtypes.*float32: shards \[99\]"):
        Index.load(out).update(device="cpu")
