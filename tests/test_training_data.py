"""Triplet data: every source format, multimodal fields, errors with their location, skipping,
mixing by ratio and batching."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from torch.utils.data import DataLoader

from lcoemb import Audio, Video
from lcoemb.training import (
    DataError,
    ImageRef,
    Triplet,
    TripletDataset,
    TripletSet,
    collate_triplets,
    load_triplets,
    mix_sources,
    parse_mix_arg,
)
from lcoemb.training.data import MAX_SKIPPED_EXAMPLES

GOOD = {"anchor": "a man plays guitar", "positive": "someone makes music", "negative": "a cat"}


@pytest.fixture(autouse=True)
def _hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_dataset`` writes Arrow caches: keep them inside the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder with real media next to it: media/cat.png, media/tone.wav, media/clip.mp4."""
    folder = tmp_path / "data"
    (folder / "media").mkdir(parents=True)
    PIL.Image.new("RGB", (12, 7), (200, 30, 30)).save(folder / "media" / "cat.png")
    t = np.arange(1600) / 16_000
    sf.write(folder / "media" / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16_000)
    (folder / "media" / "clip.mp4").write_bytes(
        b"\x00\x00\x00\x18ftypmp42"
    )  # only checked to exist
    return folder


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (dumped) or raw strings (written as they are)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_text_triplets_keep_their_line_and_absent_negatives(tmp_path):
    path = write_jsonl(
        tmp_path / "nli.jsonl",
        [
            GOOD,
            {"anchor": "q", "positive": "p"},
            {"anchor": "q2", "positive": "p2", "negative": None},
        ],
    )
    result = load_triplets(path)
    assert isinstance(result, TripletSet) and len(result) == 3 and result.skipped == 0
    assert result.name == str(path)
    first, second, third = result.triplets
    assert first == Triplet(GOOD["anchor"], GOOD["positive"], GOOD["negative"], f"{path}:1")
    assert second.negative is None and third.negative is None
    assert [t.source for t in result.triplets] == [f"{path}:{i}" for i in (1, 2, 3)]


def test_multimodal_fields_become_media_refs_resolved_against_the_data_folder(
    data_dir, tmp_path, monkeypatch
):
    write_jsonl(
        data_dir / "calib.jsonl",
        [
            {"anchor": {"image": "media/cat.png"}, "positive": "a red square"},
            {"anchor": {"text": "listen", "audio": "media/tone.wav"}, "positive": "a tone"},
            {"anchor": {"video": "media/clip.mp4"}, "positive": {"text": "a clip"}},
        ],
    )
    monkeypatch.chdir(tmp_path)  # relative paths must not depend on the working directory
    image, audio, video = load_triplets("data/calib.jsonl").triplets
    assert image.anchor == ImageRef(data_dir / "media" / "cat.png")
    # media + text -> [media, text], media first like the reference's content order
    assert audio.anchor == [Audio(data_dir / "media" / "tone.wav"), "listen"]
    assert video.anchor == Video(data_dir / "media" / "clip.mp4")
    assert video.positive == "a clip"  # an object with text only is plain text
    assert image.source == "data/calib.jsonl:1"


def test_absolute_media_paths_are_kept(data_dir, tmp_path):
    png = data_dir / "media" / "cat.png"
    path = write_jsonl(tmp_path / "abs.jsonl", [{"anchor": {"image": str(png)}, "positive": "p"}])
    assert load_triplets(path).triplets[0].anchor == ImageRef(png)


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        ('{"anchor": "a", "positive": ', "invalid JSON"),
        ("", "blank line (every line must be one JSON object)"),
        ("   ", "blank line (every line must be one JSON object)"),
        ('["a", "b"]', "expected a JSON object, got list"),
        ('{"anchor": "a"}', "missing 'positive'"),
        ('{"positive": "p", "negative": "n"}', "missing 'anchor'"),
        ('{"anchor": "a", "positive": null}', "missing 'positive'"),
        ('{"anchor": "a", "positive": "p", "negatives": "n"}', "unknown key(s) 'negatives'"),
        ('{"anchor": 3, "positive": "p"}', "field 'anchor': expected a string or an object"),
        ('{"anchor": ["a"], "positive": "p"}', "field 'anchor': expected a string or an object"),
        ('{"anchor": "a", "positive": "  "}', "field 'positive': empty text"),
        ('{"anchor": "a", "positive": "p", "negative": ""}', "field 'negative': empty text"),
        ('{"anchor": {"text": ""}, "positive": "p"}', "field 'anchor': empty text"),
        ('{"anchor": {"text": 5}, "positive": "p"}', "field 'anchor': 'text' must be a string"),
        ('{"anchor": {}, "positive": "p"}', "field 'anchor': empty object"),
        ('{"anchor": {"txt": "a"}, "positive": "p"}', "field 'anchor': unknown key(s) 'txt'"),
        (
            '{"anchor": "a", "positive": {"image": "media/cat.png", "audio": "media/tone.wav"}}',
            "field 'positive': at most one of 'image', 'audio', 'video'",
        ),
        ('{"anchor": "a", "positive": {"image": ""}}', "field 'positive': 'image' must be"),
        ('{"anchor": "a", "positive": {"image": 7}}', "field 'positive': 'image' must be"),
        (
            '{"anchor": "a", "positive": {"image": "x.png"}}',
            "field 'positive': image file not found: 'x.png'",
        ),
        (
            '{"anchor": "a", "positive": {"text": "t", "audio": "nope.wav"}}',
            "field 'positive': audio file not found: 'nope.wav'",
        ),
        (
            '{"anchor": "a", "positive": "p", "negative": {"video": "media"}}',  # a folder
            "field 'negative': video file not found: 'media'",
        ),
    ],
)
def test_a_malformed_jsonl_line_names_file_line_and_cause(data_dir, line, cause):
    path = write_jsonl(data_dir / "bad.jsonl", [GOOD, line, GOOD])
    with pytest.raises(DataError) as info:
        load_triplets(path)
    assert str(info.value).startswith(f"{path}:2: {cause}")


def test_invalid_utf8_is_a_line_error(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"anchor": "\xff", "positive": "p"}\n')
    with pytest.raises(DataError, match=r"bytes\.jsonl:2: not valid UTF-8"):
        load_triplets(path)
    assert len(load_triplets(path, skip_bad=True)) == 1


def test_skip_bad_skips_counts_and_keeps_the_first_reasons(tmp_path):
    rows = [GOOD, "not json", GOOD, "", {"anchor": "a"}] + ["{"] * 6 + [GOOD]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = load_triplets(path, skip_bad=True)
    assert [t.source for t in result.triplets] == [f"{path}:{i}" for i in (1, 3, 12)]
    assert result.skipped == 9
    assert len(result.skipped_examples) == MAX_SKIPPED_EXAMPLES
    assert result.skipped_examples[0].startswith(f"{path}:2: invalid JSON")
    assert result.skipped_examples[1].startswith(f"{path}:4: blank line")
    assert result.skipped_examples[2] == f"{path}:5: missing 'positive'"


def test_an_empty_source_or_one_with_only_bad_rows_fails_clearly(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: no triplets"):
        load_triplets(empty)
    bad = write_jsonl(tmp_path / "bad.jsonl", ["nope", {"anchor": "a"}])
    with pytest.raises(DataError, match=r"no valid triplets: all 2 rows were malformed") as info:
        load_triplets(bad, skip_bad=True)
    assert f"{bad}:1: invalid JSON" in str(info.value)
    assert f"{bad}:2: missing 'positive'" in str(info.value)


def test_limit_stops_after_that_many_valid_triplets(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ["bad", GOOD, GOOD, GOOD, "never read"])
    result = load_triplets(path, skip_bad=True, limit=2)
    assert [t.source for t in result.triplets] == [f"{path}:2", f"{path}:3"]
    assert result.skipped == 1  # line 5 is never reached
    with pytest.raises(ValueError, match="limit must be at least 1"):
        load_triplets(path, limit=0)


def test_missing_files_and_unknown_extensions(tmp_path):
    with pytest.raises(DataError, match=r"missing\.jsonl: file not found"):
        load_triplets(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="file not found"):
        load_triplets("./no/such/folder")
    other = tmp_path / "data.txt"
    other.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file extension '\.txt'"):
        load_triplets(other)
    good = write_jsonl(tmp_path / "good.jsonl", [GOOD])
    with pytest.raises(DataError, match="apply to datasets, not to the file"):
        load_triplets(f"{good}@test")


# ----------------------------------------------------------------------------- CSV


def test_csv_rows_with_json_object_fields_and_empty_negatives(data_dir):
    path = data_dir / "calib.csv"
    path.write_text(
        "anchor,positive,negative\n"
        '"two\nlines",p1,n1\n'  # a quoted field spanning lines 2-3
        '"{""image"": ""media/cat.png"", ""text"": ""what is this""}",a red square,\n'
        "q3,p3,n3\n",
        encoding="utf-8",
    )
    first, second, third = load_triplets(path).triplets
    assert first == Triplet("two\nlines", "p1", "n1", f"{path}:2")
    assert second.anchor == [ImageRef(data_dir / "media" / "cat.png"), "what is this"]
    assert second.negative is None  # an empty cell is an absent negative
    assert second.source == f"{path}:4" and third.source == f"{path}:5"


def test_csv_without_a_negative_column(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("positive,anchor\np,a\n")
    assert load_triplets(path).triplets == [Triplet("a", "p", None, f"{path}:2")]


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        ("a,p,n\nq,p\n", "3: expected 3 fields (anchor, positive, negative), got 2"),
        ("a,p,n\n\nq,p,n\n", "3: blank line"),
        ("a,,n\n", "2: missing 'positive'"),
        ('a,p,"{not json"\n', "2: field 'negative': starts with '{' but is not a valid JSON"),
        ('a,"{""image"": ""x.png""}",n\n', "2: field 'positive': image file not found: 'x.png'"),
    ],
)
def test_a_malformed_csv_row_names_file_line_and_cause(tmp_path, body, cause):
    path = tmp_path / "bad.csv"
    path.write_text("anchor,positive,negative\n" + body)
    with pytest.raises(DataError) as info:
        load_triplets(path)
    assert str(info.value).startswith(f"{path}:{cause}")


@pytest.mark.parametrize(
    ("header", "cause"),
    [
        ("anchor,negative", "missing column(s) 'positive'"),
        ("anchor,positive,negatives", "unknown column(s) 'negatives'"),
        ("anchor,positive,anchor", "duplicate column(s) 'anchor'"),
    ],
)
def test_csv_header_problems_fail_even_with_skip_bad(tmp_path, header, cause):
    path = tmp_path / "h.csv"
    path.write_text(header + "\na,b,c\n")
    with pytest.raises(DataError) as info:
        load_triplets(path, skip_bad=True)
    assert str(info.value).startswith(f"{path}: {cause}")


def test_csv_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_triplets(path)


# ----------------------------------------------------------------------------- Parquet


def test_parquet_struct_and_json_string_fields(data_dir):
    path = data_dir / "calib.parquet"
    table = pa.table(
        {
            # a struct column: rows without an image get image=None
            "anchor": [{"text": "a cat", "image": "media/cat.png"}, {"text": "q2", "image": None}],
            "positive": ['{"audio": "media/tone.wav"}', "p2"],  # a JSON string object
            "negative": [None, "n2"],
        }
    )
    pq.write_table(table, path)
    first, second = load_triplets(path).triplets
    assert first.anchor == [ImageRef(data_dir / "media" / "cat.png"), "a cat"]
    assert first.positive == Audio(data_dir / "media" / "tone.wav")
    assert first.negative is None and first.source == f"{path}[0]"
    assert second == Triplet("q2", "p2", "n2", f"{path}[1]")


def test_a_malformed_parquet_row_names_its_row(data_dir):
    path = data_dir / "bad.parquet"
    pq.write_table(
        pa.table({"anchor": ["a", "b", "c"], "positive": ["p", '{"image": "gone.png"}', None]}),
        path,
    )
    with pytest.raises(DataError) as info:
        load_triplets(path)
    assert str(info.value).startswith(f"{path}[1]: field 'positive': image file not found")
    result = load_triplets(path, skip_bad=True)
    assert len(result) == 1 and result.skipped == 2
    assert result.skipped_examples[1] == f"{path}[2]: missing 'positive'"


def test_parquet_wrong_column_type_and_corrupt_file(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"anchor": [1], "positive": ["p"]}), path)
    with pytest.raises(DataError, match=r"ints\.parquet\[0\]: field 'anchor': .* got int"):
        load_triplets(path)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read Parquet file"):
        load_triplets(broken)


# ----------------------------------------------------------------------------- Hugging Face


def test_save_to_disk_folder_and_dataset_dict_splits(data_dir):
    rows = {
        "anchor": ["q1", '{"image": "media/cat.png", "text": "look"}'],
        "positive": ["p1", "p2"],
        "negative": ["n1", None],
    }
    single = data_dir / "saved"
    datasets.Dataset.from_dict(rows).save_to_disk(single)
    (single / "media").symlink_to(data_dir / "media")  # relative paths resolve in the folder
    first, second = load_triplets(single).triplets
    assert first == Triplet("q1", "p1", "n1", f"hf:{single}[0]")
    assert second.anchor == [ImageRef(single / "media" / "cat.png"), "look"]
    assert second.negative is None

    splits = data_dir / "saved-dict"
    datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"anchor": ["t"], "positive": ["tp"]}),
        test=datasets.Dataset.from_dict({"anchor": ["e"], "positive": ["ep"]}),
    ).save_to_disk(splits)
    assert load_triplets(splits).triplets[0].anchor == "t"  # split defaults to train
    test = load_triplets(f"{splits}@test")
    assert test.triplets[0].anchor == "e" and test.triplets[0].source == f"hf:{splits}@test[0]"
    with pytest.raises(DataError, match=r"no split 'dev'; the folder has \['test', 'train'\]"):
        load_triplets(f"{splits}@dev")
    with pytest.raises(DataError, match="single-split save_to_disk folder; drop '@test'"):
        load_triplets(f"{single}@test")
    with pytest.raises(DataError, match="no configs; drop ':cfg'"):
        load_triplets(f"{splits}:cfg")


def test_load_dataset_over_a_local_folder_of_parquet_and_jsonl(data_dir):
    folder = data_dir / "hub-like"
    folder.mkdir()
    pq.write_table(
        pa.table({"anchor": ["a0", "a1"], "positive": ["p0", "p1"], "negative": ["n0", "n1"]}),
        folder / "train.parquet",
    )
    result = load_triplets(folder)
    assert [t.anchor for t in result.triplets] == ["a0", "a1"]
    assert result.triplets[1].source == f"hf:{folder}[1]"

    jsonl = data_dir / "jsonl-folder"
    jsonl.mkdir()
    write_jsonl(
        jsonl / "test.jsonl",
        [
            {"anchor": {"text": "t", "image": "../media/cat.png"}, "positive": "p"},
            {"anchor": "plain", "positive": {"text": "only text"}},
        ],
    )
    first, second = load_triplets(f"{jsonl}@test").triplets
    assert first.anchor == [ImageRef(jsonl / "../media/cat.png"), "t"]
    assert second.anchor == "plain" and second.positive == "only text"


def test_hf_rows_are_validated_like_file_rows(tmp_path):
    folder = tmp_path / "bad-hf"
    datasets.Dataset.from_dict({"anchor": ["a", " "], "positive": ["p", "p"]}).save_to_disk(folder)
    with pytest.raises(DataError) as info:
        load_triplets(folder)
    assert str(info.value) == f"hf:{folder}[1]: field 'anchor': empty text"
    extra = tmp_path / "extra-column"
    datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["p"], "id": [1]}).save_to_disk(extra)
    with pytest.raises(DataError, match=r"unknown column\(s\) 'id'"):
        load_triplets(extra, skip_bad=True)


def test_hub_names_are_passed_to_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["p"], "negative": ["n"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    result = load_triplets("sentence-transformers/all-nli:triplet")
    assert calls[-1] == ("sentence-transformers/all-nli", "triplet", "train")
    assert result.triplets[0].source == "hf:sentence-transformers/all-nli:triplet[0]"
    load_triplets("sentence-transformers/all-nli:triplet@dev")
    assert calls[-1] == ("sentence-transformers/all-nli", "triplet", "dev")
    load_triplets("org/pairs@test")
    assert calls[-1] == ("org/pairs", None, "test")
    with pytest.raises(DataError, match="expected a file, a folder or NAME"):
        load_triplets("org/pairs:@test")


def test_relative_media_of_hub_datasets_resolve_against_the_working_directory(
    data_dir, monkeypatch
):
    rows = {"anchor": ['{"image": "media/cat.png"}'], "positive": ["p"]}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict(rows))
    monkeypatch.chdir(data_dir)
    (triplet,) = load_triplets("org/calibration").triplets
    assert triplet.anchor == ImageRef(data_dir / "media" / "cat.png")  # absolute: cwd may change
    monkeypatch.chdir(data_dir.parent)
    with pytest.raises(DataError, match=r"hf:org/calibration\[0\]: field 'anchor': image file not"):
        load_triplets("org/calibration")


def test_hub_load_errors_are_data_errors(monkeypatch):
    def failing(path, name=None, split=None):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(DataError, match="org/x: cannot load dataset: no network"):
        load_triplets("org/x")


# ----------------------------------------------------------------------------- mixing


def make_set(name: str, n: int) -> TripletSet:
    return TripletSet(name, [Triplet(f"{name}{i}", "p", None, f"{name}:{i}") for i in range(n)])


def origin(mixed: list[Triplet]) -> Counter:
    return Counter(t.source.split(":")[0] for t in mixed)


@pytest.mark.parametrize("total", [10, 33, 50, 99])
def test_mix_follows_the_ratio_within_one_item(total):
    mixed = mix_sources([(make_set("text", 100), 0.8), (make_set("mm", 100), 0.2)], total=total)
    counts = origin(mixed)
    assert len(mixed) == total
    assert abs(counts["text"] - 0.8 * total) <= 1 and abs(counts["mm"] - 0.2 * total) <= 1
    assert len({t.source for t in mixed}) == total  # no repeats while a source has items left


def test_mix_weights_need_not_sum_to_one():
    a = mix_sources([(make_set("a", 50), 3), (make_set("b", 50), 1)], total=40, seed=3)
    b = mix_sources([(make_set("a", 50), 0.75), (make_set("b", 50), 0.25)], total=40, seed=3)
    assert origin(a) == Counter(a=30, b=10)
    assert a == b


def test_mix_default_total_is_the_largest_without_repeats():
    # 80 / 0.8 = 100 < 50 / 0.2 = 250: the text set is used whole, 20 of the 50 calibration items
    mixed = mix_sources([(make_set("text", 80), 0.8), (make_set("mm", 50), 0.2)])
    assert origin(mixed) == Counter(text=80, mm=20)
    assert len({t.source for t in mixed}) == 100
    # the scarce source decides: 10 / 0.5 = 20
    mixed = mix_sources([(make_set("text", 1000), 1.0), (make_set("mm", 10), 1.0)])
    assert origin(mixed) == Counter(text=10, mm=10)


def test_mix_is_deterministic_by_seed_and_shuffled():
    sets = [(make_set("a", 60), 0.5), (make_set("b", 60), 0.5)]
    assert mix_sources(sets, total=40, seed=1) == mix_sources(sets, total=40, seed=1)
    assert mix_sources(sets, total=40, seed=1) != mix_sources(sets, total=40, seed=2)
    names = [t.source.split(":")[0] for t in mix_sources(sets, total=40, seed=1)]
    assert names != sorted(names)  # sources are interleaved, not one block after another


def test_mix_beyond_the_data_repeats_items_evenly():
    mixed = mix_sources([(make_set("small", 4), 0.5), (make_set("big", 100), 0.5)], total=22)
    uses = Counter(t.source for t in mixed if t.source.startswith("small"))
    assert sum(uses.values()) == 11
    assert sorted(uses.values()) == [2, 3, 3, 3]  # 11 = 2 whole passes + 3 more, none thrice over


@pytest.mark.parametrize(
    ("sets", "kwargs", "match"),
    [
        ([], {}, "at least one"),
        ([(make_set("a", 3), 0.0)], {}, "a: weight must be a positive number"),
        ([(make_set("a", 3), -1.0)], {}, "weight must be a positive number"),
        ([(make_set("a", 3), float("nan"))], {}, "weight must be a positive number"),
        ([(make_set("a", 0), 1.0)], {}, "a: no triplets to mix"),
        ([(make_set("a", 3), 1.0)], {"total": 0}, "total must be at least 1"),
    ],
)
def test_mix_rejects_bad_arguments(sets, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mix_sources(sets, **kwargs)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("data/nli.jsonl:0.8", ("data/nli.jsonl", 0.8)),
        ("calib.parquet:2", ("calib.parquet", 2.0)),
        (
            "sentence-transformers/all-nli:triplet:0.8",
            ("sentence-transformers/all-nli:triplet", 0.8),
        ),
        ("org/name:cfg@dev:1e-1", ("org/name:cfg@dev", 0.1)),
        ("C:\\data\\x.jsonl:3", ("C:\\data\\x.jsonl", 3.0)),
    ],
)
def test_parse_mix_arg_takes_the_weight_after_the_last_colon(arg, expected):
    assert parse_mix_arg(arg) == expected


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ("data.jsonl", "expects SOURCE:WEIGHT"),
        (":0.5", "expects SOURCE:WEIGHT"),
        ("sentence-transformers/all-nli:triplet", "'triplet' after the last ':'.* is not a number"),
        ("data.jsonl:", "'' after the last ':'"),
        ("data.jsonl:0", "must be a positive number"),
        ("data.jsonl:-0.5", "must be a positive number"),
        ("data.jsonl:nan", "must be a positive number"),
        ("data.jsonl:inf", "must be a positive number"),
    ],
)
def test_parse_mix_arg_rejects(arg, match):
    with pytest.raises(DataError, match=match):
        parse_mix_arg(arg)


# ----------------------------------------------------------------------------- batching


def test_collate_keeps_media_unopened_and_pools_only_the_negatives_present(data_dir):
    path = write_jsonl(
        data_dir / "batch.jsonl",
        [
            {
                "anchor": {"text": "what", "image": "media/cat.png"},
                "positive": "p0",
                "negative": "n0",
            },
            {"anchor": "a1", "positive": {"audio": "media/tone.wav"}},
            {"anchor": "a2", "positive": "p2", "negative": {"image": "media/cat.png"}},
        ],
    )
    loader = DataLoader(
        TripletDataset(load_triplets(path).triplets), batch_size=3, collate_fn=collate_triplets
    )
    (batch,) = list(loader)
    # media stay references: files are opened batch by batch by the encoder, never a whole
    # global batch at once
    assert batch["anchor"][0] == [ImageRef(data_dir / "media" / "cat.png"), "what"]
    assert batch["anchor"][1:] == ["a1", "a2"]
    assert batch["positive"] == ["p0", Audio(data_dir / "media" / "tone.wav"), "p2"]
    assert len(batch["negative"]) == 2
    assert batch["negative"] == ["n0", ImageRef(data_dir / "media" / "cat.png")]
    assert batch["source"] == [f"{path}:{i}" for i in (1, 2, 3)]


def test_collate_without_any_negative_and_dataset_access():
    triplets = [Triplet("a", "p", None, "x:1"), Triplet("b", "q", None, "x:2")]
    dataset = TripletDataset(triplets)
    assert len(dataset) == 2 and dataset[1] is triplets[1]
    assert collate_triplets([dataset[0], dataset[1]]) == {
        "anchor": ["a", "b"],
        "positive": ["p", "q"],
        "negative": None,
        "source": ["x:1", "x:2"],
    }
    with pytest.raises(ValueError, match="empty batch"):
        collate_triplets([])


def test_triplets_are_immutable():
    triplet = Triplet("a", "p", None, "x:1")
    with pytest.raises(AttributeError):
        triplet.anchor = "b"  # type: ignore[misc]
