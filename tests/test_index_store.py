"""Walking a collection (lcoemb.index.source) and the on-disk index folder (lcoemb.index.store)."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from lcoemb.index import store
from lcoemb.index.source import Entry, split_passages, walk_source
from lcoemb.inputs import Audio, ImageRef, InputError, Video, item_from_record
from tests.conftest import tone, write_video

# ----------------------------------------------------------------------------- helpers


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.new("RGB", (8, 8), colour).save(path)
    return path


def _long_text() -> str:
    """About 2500 characters: paragraphs of numbered sentences."""
    paragraphs = [
        " ".join(f"Sentence {p}.{s} says something about topic {s % 7}." for s in range(10))
        for p in range(6)
    ]
    return "\n\n".join(paragraphs) + "\n"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """A mixed folder: media, text, nested and hidden folders, other and unreadable files."""
    root = tmp_path / "collection"
    _png(root / "a.png", (255, 0, 0))
    _png(root / "photos" / "B.PNG", (0, 0, 255))  # nested, upper-case suffix
    sf.write(root / "sound.wav", tone(0.5, 16_000)[0], 16_000)
    write_video(root / "clip.mp4", seconds=1, fps=4, size=(32, 32))
    (root / "notes").mkdir()
    (root / "notes" / "long.txt").write_text(_long_text(), encoding="utf-8")
    (root / "readme.md").write_bytes("\ufeff# Readme\n\nShort text.\n".encode())  # with a BOM
    (root / "bad.txt").write_bytes(b"caf\xe9 au lait\n")  # Latin-1, not UTF-8
    (root / "empty.txt").write_bytes(b"")
    (root / "gone.png").symlink_to(root / "no-such-file.png")  # a broken link
    (root / ".hidden").write_text("not indexed")
    _png(root / ".cache" / "x.png", (0, 255, 0))  # inside a hidden folder
    (root / "data.xyz").write_bytes(b"\x00\x01")
    (root / "LICENSE").write_text("no suffix")
    (root / "loop").symlink_to(root, target_is_directory=True)  # followed, it would never end
    return root


# ----------------------------------------------------------------------------- folders


def test_folder_walk_gives_sorted_entries_skips_and_errors(collection: Path):
    walk = walk_source(collection)

    assert walk.root == collection
    assert [(e.path, e.passage, e.modality) for e in walk.entries] == [
        ("a.png", None, "image"),
        ("clip.mp4", None, "video"),
        ("notes/long.txt", 0, "text"),
        ("notes/long.txt", 1, "text"),
        ("notes/long.txt", 2, "text"),
        ("photos/B.PNG", None, "image"),
        ("readme.md", 0, "text"),
        ("sound.wav", None, "audio"),
    ]
    assert [e.key for e in walk.entries if e.passage is None] == [
        "a.png",
        "clip.mp4",
        "photos/B.PNG",
        "sound.wav",
    ]
    assert walk.skipped == {"": 1, ".xyz": 1}  # hidden files and the symlinked folder: not counted
    assert [e["path"] for e in walk.errors] == ["bad.txt", "empty.txt", "gone.png"]
    causes = {e["path"]: e["error"] for e in walk.errors}
    assert "not UTF-8" in causes["bad.txt"]
    assert "empty or only whitespace" in causes["empty.txt"]
    assert "not a regular file" in causes["gone.png"]
    for entry in walk.entries:
        path = collection / entry.path
        assert entry.content_hash == _sha256(path)
        assert entry.size == path.stat().st_size
        assert entry.mtime == path.stat().st_mtime
    readme = next(e for e in walk.entries if e.path == "readme.md")
    assert readme.text == "# Readme\n\nShort text."  # the BOM is not part of the text


def test_text_passages_cover_the_file_exactly(collection: Path):
    text = (collection / "notes" / "long.txt").read_text(encoding="utf-8")
    assert 2400 < len(text) < 2700
    passages = [e for e in walk_source(collection).entries if e.path == "notes/long.txt"]

    assert [e.key for e in passages] == [f"notes/long.txt#{n}" for n in range(3)]
    assert len({e.content_hash for e in passages}) == 1  # every passage carries its file's hash
    previous_end = 0
    for entry in passages:
        assert text[entry.start : entry.end] == entry.text
        assert 0 < len(entry.text) <= 1000
        assert entry.text == entry.text.strip()
        assert text[previous_end : entry.start].strip() == ""  # nothing but whitespace is lost
        assert entry.text.endswith(".")  # cut at a paragraph or sentence end, not mid-sentence
        previous_end = entry.end
    assert text[previous_end:].strip() == ""
    # the passage size is a parameter
    small = [e for e in walk_source(collection, passage_chars=200).entries if e.modality == "text"]
    assert all(len(e.text) <= 200 for e in small) and len(small) > 14


def test_content_hash_follows_the_bytes_and_large_files_hash_in_chunks(collection: Path):
    big = collection / "big.webm"
    big.write_bytes(np.random.default_rng(0).bytes(5 * 2**20 // 2))  # 2.5 MiB: three chunks
    before = {e.key: e for e in walk_source(collection).entries}
    assert before["big.webm"].content_hash == _sha256(big)
    assert before["big.webm"].size == 5 * 2**20 // 2

    _png(collection / "a.png", (254, 0, 0))
    after = {e.key: e for e in walk_source(collection).entries}

    assert after["a.png"].content_hash == _sha256(collection / "a.png")
    assert after["a.png"].content_hash != before["a.png"].content_hash
    unchanged = set(before) - {"a.png"}
    assert all(after[k].content_hash == before[k].content_hash for k in unchanged)


def test_strict_walk_raises_on_the_first_unreadable_file(collection: Path):
    with pytest.raises(InputError, match=r"^bad\.txt: not UTF-8"):
        walk_source(collection, strict=True)
    (collection / "bad.txt").unlink()
    with pytest.raises(InputError, match=r"^empty\.txt: no text"):
        walk_source(collection, strict=True)


def test_walk_refuses_a_missing_source_and_a_file_that_is_not_jsonl(tmp_path: Path):
    with pytest.raises(InputError, match="source not found"):
        walk_source(tmp_path / "nowhere")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(InputError, match=r"not a folder or an items \.jsonl file"):
        walk_source(notes)
    with pytest.raises(ValueError, match="passage_chars"):
        walk_source(tmp_path, passage_chars=0)


def test_entry_item_is_the_encoder_input(collection: Path):
    entries = {e.key: e for e in walk_source(collection).entries}

    assert entries["a.png"].item(collection) == ImageRef(collection / "a.png")
    assert entries["sound.wav"].item(collection) == Audio(collection / "sound.wav")
    assert entries["clip.mp4"].item(collection) == Video(collection / "clip.mp4")
    assert entries["notes/long.txt#1"].item(collection) == entries["notes/long.txt#1"].text


# ----------------------------------------------------------------------------- passages


def test_split_passages_prefers_paragraphs_then_sentences_then_spaces():
    def split(text: str, limit: int) -> list[str]:
        return [text[s:e] for s, e in split_passages(text, limit)]

    # a paragraph break wins over the later sentence end and spaces
    assert split("Alpha beta. Gamma delta\n\nEpsilon zeta eta theta", 30) == [
        "Alpha beta. Gamma delta",
        "Epsilon zeta eta theta",
    ]
    # a sentence end wins over a later space
    assert split("Alpha beta gamma. Delta epsilon zeta eta", 25) == [
        "Alpha beta gamma.",
        "Delta epsilon zeta eta",
    ]
    # a break in the first half of the window would leave a fragment: the last space wins
    assert split("Hi. Alpha beta gamma delta epsilon", 20) == [
        "Hi. Alpha beta gamma",
        "delta epsilon",
    ]
    # a CRLF blank line is a paragraph break too
    assert split("Alpha beta.\r\n\r\nGamma delta epsilon", 20) == [
        "Alpha beta.",
        "Gamma delta epsilon",
    ]
    assert split("abcdefghij", 3) == ["abc", "def", "ghi", "j"]  # no whitespace: hard cut
    assert split_passages("  ab  ", 10) == [(2, 4)]
    assert split_passages(" \n\t ", 10) == []
    with pytest.raises(ValueError, match="passage_chars"):
        split_passages("text", 0)


def test_split_passages_keeps_every_non_space_character_once():
    rng = random.Random(0)
    pieces = ["word", "longerword", ".", "!", " ", "  ", "\n", "\n\n", "\t", "x" * 30, "é"]
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
        limit = rng.randint(1, 40)
        spans = split_passages(text, limit)
        end = 0
        for start, stop in spans:
            passage = text[start:stop]
            assert 0 < len(passage) <= limit
            assert passage == passage.strip()
            assert start >= end and text[end:start].strip() == ""
            end = stop
        assert text[end:].strip() == ""


# ----------------------------------------------------------------------------- JSONL


@pytest.fixture
def items_jsonl(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    _png(media / "red.png", (255, 0, 0))
    sf.write(media / "tone.wav", tone(0.5, 16_000)[0], 16_000)
    lines = [
        '{"text": "a red square"}',
        '{"image": "media/red.png"}',
        '{"parts": [{"text": "listen"}, {"audio": "media/tone.wav"}]}',
        '{"text": "broken',
        '{"image": "media/missing.png"}',
        '{"audio": "media/tone.wav", "sampling_rate": 16000}',
    ]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_source_gives_one_entry_per_line_and_errors_for_bad_lines(items_jsonl: Path):
    walk = walk_source(items_jsonl)
    root = items_jsonl.parent

    assert walk.root == root and walk.skipped == {}
    assert [(e.path, e.modality, e.text) for e in walk.entries] == [
        ("items.jsonl:1", "text", "a red square"),
        ("items.jsonl:2", "image", None),
        ("items.jsonl:3", "interleaved", "listen"),
        ("items.jsonl:6", "audio", None),
    ]
    assert [e["path"] for e in walk.errors] == ["items.jsonl:4", "items.jsonl:5"]
    assert walk.errors[0]["error"].startswith("invalid JSON")
    assert walk.errors[1]["error"].startswith("image file not found")
    lines = items_jsonl.read_text(encoding="utf-8").splitlines()
    for entry in walk.entries:
        lineno = int(entry.path.split(":")[1])
        expected = item_from_record(json.loads(lines[lineno - 1]), entry.path, base_dir=root)
        assert entry.item(root) == expected
        assert entry.key == entry.content_hash
        assert entry.mtime >= items_jsonl.stat().st_mtime
    image = walk.entries[1]
    assert image.size > (root / "media" / "red.png").stat().st_size  # the line plus the image


def test_jsonl_hash_follows_the_named_media_not_the_formatting(items_jsonl: Path):
    before = walk_source(items_jsonl).entries
    _png(items_jsonl.parent / "media" / "red.png", (250, 0, 0))
    after = walk_source(items_jsonl).entries

    assert after[1].key != before[1].key  # the image it names changed
    assert [e.key for e in after[::2]] == [e.key for e in before[::2]]
    spaced = items_jsonl.with_name("spaced.jsonl")
    spaced.write_text('{ "text" :  "a red square" }\n', encoding="utf-8")
    assert walk_source(spaced).entries[0].key == before[0].key


def test_strict_jsonl_walk_raises_naming_the_line(items_jsonl: Path):
    with pytest.raises(InputError, match=r"^items\.jsonl:4: invalid JSON"):
        walk_source(items_jsonl, strict=True)


# ----------------------------------------------------------------------------- store


def _entries(n: int, offset: int = 0) -> list[Entry]:
    entries = []
    for i in range(offset, offset + n):
        if i % 2:
            entries.append(Entry(f"img{i}.png", f"img{i}.png", "image", f"{i:064x}", 100 + i, i))
        else:
            text = f"passage {i} with ünïcode"
            entries.append(
                Entry(
                    f"doc.txt#{i}",
                    "doc.txt",
                    "text",
                    "f" * 64,
                    5000,
                    1.5,
                    i,
                    10 * i,
                    10 * i + 9,
                    text,
                )
            )
    return entries


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_shards_round_trip_rows_vectors_and_errors(tmp_path: Path):
    first, vectors = _entries(5), _vectors(5, 16, 0)
    errors = [{"path": "bad.png", "error": "cannot decode image"}]
    path0 = store.write_shard(tmp_path, 0, first, range(5), vectors, errors)
    # an empty shard: all its items failed, and it records them
    path1 = store.write_shard(
        tmp_path, 1, [], [], np.zeros((0, 16), np.float32), [{"path": "x.wav", "error": "e"}]
    )
    second = _entries(3, offset=5)
    store.write_shard(tmp_path, 2, second, [10, 11, 12], _vectors(3, 16, 1))

    assert path0 == tmp_path / "shards" / "shard-00000.parquet"
    assert path1 == store.shard_path(tmp_path, 1)
    assert [n for n, _ in store.list_shards(tmp_path)] == [0, 1, 2]
    table, read_vectors, read_errors = store.read_shard(path0)
    assert "vector" not in table.column_names and table.schema.metadata is None
    np.testing.assert_array_equal(read_vectors, vectors)
    assert read_vectors.dtype == np.float32
    assert read_errors == errors
    assert table.to_pylist() == [
        {"id": i, **{k: getattr(e, k) for k in table.column_names if k != "id"}}
        for i, e in enumerate(first)
    ]
    empty, empty_vectors, empty_errors = store.read_shard(path1)
    assert empty.num_rows == 0 and empty_vectors.shape == (0, 16)
    assert empty_errors == [{"path": "x.wav", "error": "e"}]

    rows, all_vectors, all_errors = store.read_rows(tmp_path)
    assert rows.column("id").to_pylist() == [0, 1, 2, 3, 4, 10, 11, 12]
    assert rows.column("key").to_pylist() == [e.key for e in first + second]
    np.testing.assert_array_equal(all_vectors, np.concatenate([vectors, _vectors(3, 16, 1)]))
    assert all_errors == [*errors, {"path": "x.wav", "error": "e"}]
    rows_only, no_vectors, _ = store.read_rows(tmp_path, vectors=False)
    assert no_vectors is None and rows_only.equals(rows)


def test_a_shard_is_plain_parquet(tmp_path: Path):
    vectors = _vectors(4, 8, 2)
    path = store.write_shard(
        tmp_path, 0, _entries(4), range(4), vectors, [{"path": "p", "error": "e"}]
    )

    table = pq.read_table(path)  # no lcoemb involved
    assert table.schema.field("vector").type == pa.list_(pa.float32(), 8)
    assert table.schema.remove_metadata().equals(store.shard_schema(8))
    assert table.column("passage").type == pa.int32()
    assert table.column("passage").to_pylist() == [0, None, 2, None]
    assert np.array_equal(np.array(table.column("vector").to_pylist(), np.float32), vectors)
    assert json.loads(table.schema.metadata[b"lcoemb.errors"]) == [{"path": "p", "error": "e"}]


def test_write_shard_checks_the_vectors_match_the_entries(tmp_path: Path):
    with pytest.raises(ValueError, match=r"shape \(3, dim\)"):
        store.write_shard(tmp_path, 0, _entries(3), range(3), _vectors(2, 8, 0))
    with pytest.raises(ValueError, match="3 entries and 2 ids"):
        store.write_shard(tmp_path, 0, _entries(3), range(2), _vectors(3, 8, 0))
    assert store.list_shards(tmp_path) == []


def test_temp_files_are_ignored_and_removed(tmp_path: Path):
    store.write_shard(tmp_path, 0, _entries(2), range(2), _vectors(2, 4, 0))
    shards = tmp_path / "shards"
    leftovers = [shards / ".shard-00001.parquet.123-abcd.tmp", tmp_path / ".manifest.json.9-ff.tmp"]
    for leftover in leftovers:
        leftover.write_bytes(b"half a file")
    (shards / "shard-1.parquet").write_bytes(b"not a name write_shard gives")

    assert store.list_shards(tmp_path) == [(0, store.shard_path(tmp_path, 0))]
    assert sorted(store.remove_temp_files(tmp_path)) == sorted(leftovers)
    assert not any(p.exists() for p in leftovers)
    assert store.remove_temp_files(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path):
    store.write_errors(tmp_path, [{"path": "a", "error": "old"}])

    def half_then_fail(f) -> None:
        f.write(b'{"path": "b", ')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        store.atomic_write(tmp_path / store.ERRORS, half_then_fail)
    assert (tmp_path / store.ERRORS).read_text() == '{"path": "a", "error": "old"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.ERRORS]


def test_a_truncated_or_foreign_shard_is_refused_naming_it(tmp_path: Path):
    path = store.write_shard(tmp_path, 0, _entries(6), range(6), _vectors(6, 32, 0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(store.IndexFormatError, match=r"shard-00000\.parquet: cannot read shard"):
        store.read_shard(path)
    with pytest.raises(store.IndexFormatError, match=r"shard-00000\.parquet"):
        store.read_rows(tmp_path)

    pq.write_table(pa.table({"id": [1], "vector": [[0.5, 0.5]]}), path)
    with pytest.raises(store.IndexFormatError, match=r"shard-00000\.parquet: not an lcoemb shard"):
        store.read_shard(path)


def test_a_shard_records_the_dtype_its_vectors_were_computed_in(tmp_path: Path):
    store.write_shard(tmp_path, 0, _entries(2), range(2), _vectors(2, 8, 0), dtype="bfloat16")
    store.write_shard(tmp_path, 1, _entries(2), [2, 3], _vectors(2, 8, 1))  # an older shard
    store.write_shard(tmp_path, 2, _entries(1), [4], _vectors(1, 8, 2), dtype="bfloat16")
    assert store.shard_dtypes(tmp_path) == {"bfloat16": [0, 2], None: [1]}
    table, _, errors = store.read_shard(store.shard_path(tmp_path, 0))
    assert table.schema.metadata is None and errors == []  # the rows carry no metadata
    store.shard_path(tmp_path, 2).write_bytes(b"PAR1 truncated")
    with pytest.raises(store.IndexFormatError, match=r"shard-00002\.parquet: cannot read"):
        store.shard_dtypes(tmp_path)


def test_read_rows_of_an_index_without_shards(tmp_path: Path):
    rows, vectors, errors = store.read_rows(tmp_path)
    assert rows.num_rows == 0 and "key" in rows.column_names
    assert vectors.shape == (0, 0) and errors == []


def test_manifest_round_trip_and_refusals(tmp_path: Path):
    manifest = {"model": "lco-mini", "dimension": 16, "source": "/data/ünï", "items": 3}
    store.write_manifest(tmp_path, manifest)

    text = (tmp_path / store.MANIFEST).read_text(encoding="utf-8")
    assert text.startswith('{\n  "format": "lcoemb-index",')  # indent 2, readable
    assert store.read_manifest(tmp_path) == {
        "format": "lcoemb-index",
        "format_version": store.FORMAT_VERSION,
        **manifest,
    }

    missing = tmp_path / "empty"
    missing.mkdir()
    with pytest.raises(store.IndexFormatError, match=r"empty/manifest\.json: not found"):
        store.read_manifest(missing)
    (tmp_path / store.MANIFEST).write_text('{"name": "some other tool"}')
    with pytest.raises(store.IndexFormatError, match=r"manifest\.json: not an lcoemb index"):
        store.read_manifest(tmp_path)
    (tmp_path / store.MANIFEST).write_text('{"format": "lcoemb-index", "format_ver')
    with pytest.raises(store.IndexFormatError, match=r"manifest\.json: cannot be read as JSON"):
        store.read_manifest(tmp_path)
    store.write_manifest(tmp_path, {"format_version": store.FORMAT_VERSION + 1})
    with pytest.raises(store.IndexFormatError, match="format version 2"):
        store.read_manifest(tmp_path)


def test_errors_file_is_one_json_object_per_line(tmp_path: Path):
    errors = [{"path": "a.txt", "error": "not UTF-8"}, {"path": "b.jsonl:3", "error": "ünï"}]
    store.write_errors(tmp_path, errors)
    lines = (tmp_path / store.ERRORS).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == errors
    store.write_errors(tmp_path, [])
    assert (tmp_path / store.ERRORS).read_bytes() == b""
    assert os.listdir(tmp_path) == [store.ERRORS]
