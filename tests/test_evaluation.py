"""mteb integration: MTEBEncoder end to end on the offline tasks (image, audio, video, text),
parity with mteb's reference wrapper on rows with several modality columns, task selection by
name, modality skips, the summary and the CLI."""

from __future__ import annotations

import json

import datasets
import mteb
import numpy as np
import PIL.Image
import pytest
from mteb._create_dataloaders import create_dataloader
from mteb.models.model_implementations.lco_embedding_models import LCOEmbedding
from mteb.types import PromptType

from lcoemb import InputError
from lcoemb.cli import main
from lcoemb.evaluation import MTEBEncoder, evaluate, format_table, offline_tasks, resolve_tasks
from lcoemb.evaluation.run import select_supported

pytestmark = pytest.mark.slow

QUICK = [
    "LCOOfflineSceneT2I",
    "LCOOfflineDocRetrieval",
    "LCOOfflineSpeechA2T",
    "LCOOfflineClipV2T",
    "LCOOfflineDigitZeroShot",
    "LCOOfflineTextSTS",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LCOEMB_CACHE", str(tmp_path_factory.getbasetemp() / "lcoemb-cache"))


@pytest.fixture(scope="module")
def model(omni_encoder):
    return MTEBEncoder(omni_encoder, "local/tiny-omni")


def test_model_meta_comes_from_the_backbone(model, omni_encoder):
    meta = model.mteb_model_meta
    assert meta.modalities == ["audio", "image", "text", "video"]
    assert meta.embed_dim == omni_encoder.embedding_dim
    assert meta.similarity_fn_name.value == "cosine"
    assert isinstance(model, mteb.models.EncoderProtocol)


def test_mteb_runs_end_to_end_on_every_modality(model, tmp_path):
    tasks = offline_tasks(QUICK, size=6)
    summary = evaluate(model, tasks, tmp_path, batch_size=4, show_progress=False)
    assert set(summary["tasks"]) == set(QUICK)
    for entry in summary["tasks"].values():
        assert 0.0 <= entry["main_score"] <= 1.0
    assert set(summary["tasks"]["LCOOfflineDocRetrieval"]["subsets"]) == {
        "eng",
        "vie",
        "msa",
        "tha",
        "lao",
    }
    modalities = {m for e in summary["tasks"].values() for m in e["modalities"]}
    assert modalities == {"text", "image", "audio", "video"}
    assert summary["mean"] == pytest.approx(
        np.mean([e["main_score"] for e in summary["tasks"].values()])
    )
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    results = list(tmp_path.glob("results/*/*/*.json"))
    assert {p.stem for p in results} >= set(QUICK)
    # a random tiny model: retrieval should not be perfect, but scores must differ by task
    assert len({round(e["main_score"], 6) for e in summary["tasks"].values()}) > 1


def test_wrapper_matches_the_reference_on_composite_rows(omni_path, omni_encoder):
    """Rows with an image and a text column: same vectors as mteb's LCOEmbedding."""
    rng = np.random.default_rng(3)
    images = [PIL.Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)) for _ in "ab"]
    ds = datasets.Dataset.from_dict({"image": images, "text": ["a red cat", "two blue dogs"]})
    ds = ds.cast_column("image", datasets.Image())
    meta = next(
        t.metadata
        for t in mteb.get_tasks(modalities=["image", "text"], exclusive_modality_filter=True)
        if t.metadata.type == "Any2AnyRetrieval"
    )
    ref = LCOEmbedding(str(omni_path), device="cpu")
    kw = {"task_metadata": meta, "hf_split": "test", "hf_subset": "default"}
    expected = np.asarray(ref.encode(create_dataloader(ds, task_metadata=meta, batch_size=2), **kw))
    ours = MTEBEncoder(omni_encoder, "local/tiny", use_instructions=False).encode(
        create_dataloader(ds, task_metadata=meta, batch_size=2), **kw
    )
    cos = (ours * expected).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.9999
    # and the composite differs from the image alone
    alone = omni_encoder.encode(images)
    assert ((alone * ours).sum(1) < 0.99).all()


def test_instructions_go_to_queries_only(model):
    meta = offline_tasks(["LCOOfflineSceneT2I"])[0].metadata.model_copy(
        update={"prompt": "Find the image."}
    )
    assert model.instruction_for(meta, PromptType.query) == "Find the image."
    assert model.instruction_for(meta, PromptType.document) is None
    plain = MTEBEncoder(model.model, "local/x", use_instructions=False)
    assert plain.instruction_for(meta, PromptType.query) is None


def test_bad_rows_name_task_split_and_row(model):
    ds = datasets.Dataset.from_dict({"text": ["fine", "", "also fine"]})
    meta = offline_tasks(["LCOOfflineTextSTS"])[0].metadata
    loader = create_dataloader(ds, task_metadata=meta, batch_size=2)
    with pytest.raises(InputError, match=r"item 1: LCOOfflineTextSTS \(default/test\)"):
        model.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default")


def test_tasks_a_model_cannot_take_are_skipped_with_the_reason(vl_path, tmp_path):
    from lcoemb import OmniEncoder

    vl = MTEBEncoder(OmniEncoder.from_pretrained(vl_path, device="cpu"), "local/tiny-vl")
    assert "audio" not in vl.mteb_model_meta.modalities
    tasks = offline_tasks(["LCOOfflineSpeechT2A", "LCOOfflineTextSTS"], size=6)
    selection = select_supported(tasks, set(vl.mteb_model_meta.modalities))
    assert [t.metadata.name for t in selection.tasks] == ["LCOOfflineTextSTS"]
    assert "needs audio" in selection.skipped["LCOOfflineSpeechT2A"]
    summary = evaluate(vl, tasks, tmp_path, show_progress=False)
    assert list(summary["tasks"]) == ["LCOOfflineTextSTS"]
    table = format_table(summary, "local/tiny-vl")
    assert "LCOOfflineSpeechT2A" in table and "skipped" in table and "needs audio" in table


def test_benchmarks_resolve_by_name():
    assert len(resolve_tasks("MIEB(lite)")) == 51
    assert len(resolve_tasks("MIEB-Lite")) == 51
    assert all("audio" in t.metadata.modalities for t in resolve_tasks("MAEB"))
    assert all("video" in t.metadata.modalities for t in resolve_tasks("MVEB"))
    assert len(resolve_tasks("offline")) >= 6
    names = [t.metadata.name for t in resolve_tasks(tasks=["STS12", "LCOOfflineSceneI2T"])]
    assert names == ["STS12", "LCOOfflineSceneI2T"]


@pytest.mark.parametrize(
    ("kw", "suggestion"),
    [
        ({"benchmark": "MIEB(lit)"}, "MIEB(lite)"),
        ({"benchmark": "ofline"}, "offline"),
        ({"tasks": ["STS12x"]}, "STS12"),
        ({"tasks": ["LCOOfflineSceneT2"]}, "LCOOfflineSceneT2I"),
    ],
)
def test_unknown_names_list_close_matches(kw, suggestion):
    with pytest.raises(ValueError, match="did you mean") as info:
        resolve_tasks(**kw)
    assert suggestion in str(info.value)


def test_offline_benchmark_covers_four_modalities_in_at_least_six_tasks():
    tasks = offline_tasks()
    assert len(tasks) >= 6
    assert {m for t in tasks for m in t.metadata.modalities} == {"text", "image", "audio", "video"}
    types = {t.metadata.type for t in tasks}
    assert {"Any2AnyRetrieval", "ZeroShotClassification", "DocumentUnderstanding", "STS"} <= types


def test_offline_data_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LCOEMB_CACHE", str(tmp_path))
    first = offline_tasks(["LCOOfflineSceneI2T"], size=4)[0]
    first.load_data()
    second = offline_tasks(["LCOOfflineSceneI2T"], size=4)[0]
    second.load_data()
    a, b = first.dataset["default"]["test"], second.dataset["default"]["test"]
    assert a["relevant_docs"] == b["relevant_docs"]
    assert [np.asarray(x).tolist() for x in a["queries"]["image"]] == [
        np.asarray(x).tolist() for x in b["queries"]["image"]
    ]
    assert list(tmp_path.glob("offline/*/scene-4"))


def test_compare_adds_the_published_rows():
    summary = {
        "tasks": {"T": {"main_score": 0.5, "modalities": ["image"], "type": "Any2AnyRetrieval"}},
        "by_type": {"Retrieval": 0.5},
        "mean": 0.5,
        "skipped": {},
    }
    table = format_table(summary, "ours", compare=True)
    assert "LCO-Emb-Omni-7B (paper)" in table and "68.8" in table and "64.5" in table
    assert "50.0" in table  # ours, ×100
    assert "68.8" not in format_table(summary, "ours")


def test_cli_eval(omni_path, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--model",
            str(omni_path),
            "--tasks",
            "LCOOfflineTextSTS,LCOOfflineSceneI2T",
            "--offline-size",
            "6",
            "--output",
            str(out),
            "--dtype",
            "float32",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "LCOOfflineTextSTS" in printed and "Retrieval" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["tasks"]) == {"LCOOfflineTextSTS", "LCOOfflineSceneI2T"}


def test_cli_eval_unknown_benchmark_is_a_clear_error(omni_path, tmp_path, capsys):
    code = main(["eval", "--model", str(omni_path), "--benchmark", "MVEB(v2)", "--output", "x"])
    assert code == 2
    assert "MVEB(v1)" in capsys.readouterr().err
