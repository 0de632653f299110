"""Tests for ``lcoemb.testing``: the tiny checkpoints must be complete, offline-loadable folders.

Everything here runs on CPU against folders written into pytest's tmp dirs; nothing may touch
the Hugging Face hub (``HF_HUB_OFFLINE`` is forced for the whole session).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lcoemb.testing import make_tiny_qwen2_5_omni_thinker, make_tiny_qwen2_5_vl

# Small pixel cap: a 64x80 test image becomes a 2x2 grid of merged patches at most.
MAX_PIXELS = 4 * 28 * 28
OMNI_SYSTEM = (
    "<|im_start|>system\nYou are Qwen, a virtual human developed by the Qwen Team, Alibaba "
    "Group, capable of perceiving auditory and visual inputs, as well as generating text and "
    "speech.<|im_end|>\n"
)
VL_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


@pytest.fixture(scope="session", autouse=True)
def _offline() -> Iterator[None]:
    """Force offline mode: env vars for late readers, the hub constant for early importers."""
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="session")
def omni_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_qwen2_5_omni_thinker(tmp_path_factory.mktemp("omni"), max_pixels=MAX_PIXELS)


@pytest.fixture(scope="session")
def vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_qwen2_5_vl(tmp_path_factory.mktemp("vl"), max_pixels=MAX_PIXELS)


@pytest.fixture(scope="session")
def omni_processor(omni_dir: Path) -> Any:
    from transformers import Qwen2_5OmniProcessor

    return Qwen2_5OmniProcessor.from_pretrained(omni_dir)


@pytest.fixture(scope="session")
def vl_processor(vl_dir: Path) -> Any:
    from transformers import Qwen2_5_VLProcessor

    return Qwen2_5_VLProcessor.from_pretrained(vl_dir)


@pytest.fixture(scope="session")
def omni_model(omni_dir: Path) -> Any:
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    return Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        omni_dir, dtype=torch.bfloat16
    ).eval()


@pytest.fixture(scope="session")
def vl_model(vl_dir: Path) -> Any:
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(vl_dir, dtype=torch.bfloat16).eval()


def _image(seed: int = 0, height: int = 64, width: int = 80) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _audio(seconds: float = 1.0, sampling_rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * sampling_rate))).astype(np.float32)


def _video(frames: int = 4, size: int = 56) -> torch.Tensor:
    """Decoded frames as the mteb collators hand them over: (T, C, H, W) uint8."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8, generator=generator)


def _write_mp4(path: Path, *, frames: int = 8, fps: int = 4, size: int = 32, seed: int = 0) -> str:
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return str(path)


def _message(*items: dict[str, str]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(items)}]


def _count(input_ids: torch.Tensor, token_id: int) -> int:
    return int((input_ids == token_id).sum())


# ---------------------------------------------------------------- folder, config, tokenizer


def test_omni_folder_config_and_processors(omni_dir: Path, omni_processor: Any) -> None:
    from transformers import AutoConfig

    names = {p.name for p in omni_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= names

    config = AutoConfig.from_pretrained(omni_dir)
    assert config.model_type == "qwen2_5_omni_thinker"
    tok = omni_processor.tokenizer
    assert config.text_config.vocab_size >= len(tok)
    assert config.image_token_id == tok.convert_tokens_to_ids("<|IMAGE|>")
    assert config.video_token_id == tok.convert_tokens_to_ids("<|VIDEO|>")
    assert config.audio_token_id == tok.convert_tokens_to_ids("<|AUDIO|>")
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_bos|>")
    assert config.audio_start_token_id == tok.convert_tokens_to_ids("<|audio_bos|>")
    assert config.audio_end_token_id == tok.convert_tokens_to_ids("<|audio_eos|>")

    image_processor = omni_processor.image_processor
    assert type(image_processor).__name__ == "Qwen2VLImageProcessor"
    assert (image_processor.patch_size, image_processor.merge_size) == (14, 2)
    assert image_processor.temporal_patch_size == 2
    assert image_processor.size["longest_edge"] == MAX_PIXELS
    assert type(omni_processor.video_processor).__name__ == "Qwen2VLVideoProcessor"

    feature_extractor = omni_processor.feature_extractor
    assert type(feature_extractor).__name__ == "WhisperFeatureExtractor"
    assert feature_extractor.sampling_rate == 16000
    assert feature_extractor.feature_size == config.audio_config.num_mel_bins == 128


def test_vl_folder_config(vl_dir: Path, vl_processor: Any) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(vl_dir)
    assert config.model_type == "qwen2_5_vl"
    tok = vl_processor.tokenizer
    assert config.text_config.vocab_size >= len(tok)
    assert (
        config.image_token_id
        == vl_processor.image_token_id
        == tok.convert_tokens_to_ids("<|image_pad|>")
    )
    assert config.video_token_id == vl_processor.video_token_id
    assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert vl_processor.image_processor.size["longest_edge"] == MAX_PIXELS


@pytest.mark.parametrize(
    ("family", "specials"),
    [
        (
            "omni",
            "<|im_start|> <|im_end|> <|AUDIO|> <|audio_bos|> <|audio_eos|> <|IMAGE|> <|VIDEO|> "
            "<|vision_bos|> <|vision_eos|>",
        ),
        (
            "vl",
            "<|im_start|> <|im_end|> <|vision_start|> <|vision_end|> <|image_pad|> <|video_pad|>",
        ),
    ],
)
def test_tokenizer(family: str, specials: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(f"{family}_processor").tokenizer
    specials_list = specials.split()
    assert type(tok).__name__ == "Qwen2Tokenizer"
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert 300 <= len(tok) <= 1100
    ids = [tok.convert_tokens_to_ids(t) for t in ["<|endoftext|>", *specials_list]]
    assert len(set(ids)) == len(ids)
    assert all(i is not None and i != tok.unk_token_id for i in ids[1:])
    for token, token_id in zip(specials_list, ids[1:], strict=True):
        assert tok.encode(f"a{token}b", add_special_tokens=False)[1] == token_id
    text = "Summarize the above image in one word: a quick fox, 42!"
    encoded = tok.encode(text, add_special_tokens=False)
    assert tok.decode(encoded) == text
    assert len(encoded) < len(text) // 2  # the trained merges actually compress English


def test_omni_tokenizer_named_tokens(omni_processor: Any) -> None:
    # Qwen2_5OmniProcessor.__init__ reads these attributes from the tokenizer
    tok = omni_processor.tokenizer
    assert tok.image_token == "<|IMAGE|>"
    assert tok.audio_token == "<|AUDIO|>"
    assert tok.video_token == "<|VIDEO|>"
    assert tok.vision_bos_token == "<|vision_bos|>"
    assert tok.vision_eos_token == "<|vision_eos|>"
    assert tok.audio_bos_token == "<|audio_bos|>"
    assert tok.audio_eos_token == "<|audio_eos|>"
    assert tok.image_token_id == tok.convert_tokens_to_ids("<|IMAGE|>")
    assert omni_processor.audio_token_id == tok.convert_tokens_to_ids("<|AUDIO|>")


# ---------------------------------------------------------------- chat templates


def test_omni_chat_template(omni_processor: Any) -> None:
    messages = _message(
        {"type": "video", "video": "placeholder"},
        {"type": "audio", "audio": "placeholder"},
        {"type": "image", "image": "placeholder"},
        {"type": "text", "text": "Summarize the above image in one word:"},
    )
    text = omni_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        OMNI_SYSTEM + "<|im_start|>user\n<|vision_bos|><|VIDEO|><|vision_eos|>"
        "<|audio_bos|><|AUDIO|><|audio_eos|><|vision_bos|><|IMAGE|><|vision_eos|>"
        "Summarize the above image in one word:<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *_message({"text": "hi"})]
    text = omni_processor.apply_chat_template(with_system, tokenize=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"


def test_vl_chat_template(vl_processor: Any) -> None:
    messages = _message(
        {"type": "image", "image": "placeholder"},
        {"type": "video", "video": "placeholder"},
        {"type": "text", "text": "Describe."},
    )
    text = vl_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        VL_SYSTEM + "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "<|vision_start|><|video_pad|><|vision_end|>Describe.<|im_end|>\n<|im_start|>assistant\n"
    )


# ---------------------------------------------------------------- processors, forward, generate


@pytest.fixture(scope="session")
def omni_inputs(omni_processor: Any) -> Any:
    messages = _message(
        {"type": "image", "image": "placeholder"},
        {"type": "audio", "audio": "placeholder"},
        {"type": "video", "video": "placeholder"},
        {"type": "text", "text": "Summarize the above image in one word:"},
    )
    text = omni_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return omni_processor(
        text=[text],
        images=[_image()],
        audio=[_audio(seconds=1.0)],
        videos=[_video()],
        padding=True,
        return_tensors="pt",
        videos_kwargs={"do_sample_frames": False},
    )


@pytest.fixture(scope="session")
def vl_inputs(vl_processor: Any) -> Any:
    messages = _message(
        {"type": "image", "image": "placeholder"},
        {"type": "video", "video": "placeholder"},
        {"type": "text", "text": "Describe."},
    )
    text = vl_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return vl_processor(
        text=[text],
        images=[_image()],
        videos=[_video()],
        do_sample_frames=False,
        return_tensors="pt",
    )


def test_omni_processor_placeholder_counts(omni_processor: Any, omni_inputs: Any) -> None:
    ids = omni_inputs["input_ids"][0]
    merge = omni_processor.image_processor.merge_size**2
    n_image = int(omni_inputs["image_grid_thw"].prod()) // merge
    assert 1 <= n_image <= MAX_PIXELS // (28 * 28)
    assert _count(ids, omni_processor.image_token_id) == n_image
    n_video = int(omni_inputs["video_grid_thw"].prod()) // merge
    assert n_video >= 1
    assert _count(ids, omni_processor.video_token_id) == n_video
    # audio encoder: conv stride 2 then 2x2 pooling over mel frames (10 ms hop)
    mel_frames = int(omni_inputs["feature_attention_mask"].sum())
    assert mel_frames == 100
    assert _count(ids, omni_processor.audio_token_id) == ((mel_frames - 1) // 2 + 1 - 2) // 2 + 1
    assert omni_inputs["input_features"].shape[1] == 128


def test_vl_processor_placeholder_counts(vl_processor: Any, vl_inputs: Any) -> None:
    ids = vl_inputs["input_ids"][0]
    merge = vl_processor.image_processor.merge_size**2
    n_image = int(vl_inputs["image_grid_thw"].prod()) // merge
    n_video = int(vl_inputs["video_grid_thw"].prod()) // merge
    assert _count(ids, vl_processor.image_token_id) == n_image >= 1
    assert _count(ids, vl_processor.video_token_id) == n_video >= 1


@pytest.mark.parametrize("family", ["omni", "vl"])
def test_bf16_forward_hidden_states_and_generate(
    family: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(f"{family}_model")
    inputs = request.getfixturevalue(f"{family}_inputs")
    config = model.config.text_config
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, return_dict=True)
    seq_len = inputs["input_ids"].shape[1]
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    last = out.hidden_states[-1]
    assert last.dtype == torch.bfloat16
    assert last.shape == (1, seq_len, config.hidden_size)
    assert torch.isfinite(last.float()).all()
    assert out.logits.shape[-1] == config.vocab_size

    generated = model.generate(**inputs, max_new_tokens=3)
    assert seq_len < generated.shape[1] <= seq_len + 3


# ---------------------------------------------------------------- determinism and knobs


def test_same_seed_same_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    first = load_file(make_tiny_qwen2_5_omni_thinker(tmp_path / "a") / "model.safetensors")
    second = load_file(make_tiny_qwen2_5_omni_thinker(tmp_path / "b") / "model.safetensors")
    other = load_file(make_tiny_qwen2_5_omni_thinker(tmp_path / "c", seed=1) / "model.safetensors")
    assert first.keys() == second.keys() == other.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    key = next(k for k in first if k.endswith("embed_tokens.weight"))
    assert first[key].std() > 0
    assert not torch.equal(first[key], other[key])
    tokenizer_a = (tmp_path / "a" / "tokenizer.json").read_bytes()
    assert tokenizer_a == (tmp_path / "c" / "tokenizer.json").read_bytes()


def test_size_knobs_and_dtype(tmp_path: Path) -> None:
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    path = make_tiny_qwen2_5_omni_thinker(
        tmp_path,
        hidden_size=96,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=3,
        intermediate_size=160,
        vision_depth=2,
        audio_layers=2,
        dtype=torch.bfloat16,
    )
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(path, dtype="auto")
    config = model.config
    assert model.dtype == torch.bfloat16
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (96, 3)
    assert config.text_config.num_key_value_heads == 3
    assert sum(config.text_config.rope_parameters["mrope_section"]) == 96 // 6 // 2
    assert (config.vision_config.depth, config.vision_config.out_hidden_size) == (2, 96)
    assert (config.audio_config.encoder_layers, config.audio_config.output_dim) == (2, 96)
    assert len(model.model.language_model.layers) == 3


def test_invalid_sizes_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="divisible"):
        make_tiny_qwen2_5_vl(tmp_path, hidden_size=64, num_attention_heads=5)


# ---------------------------------------------------------------- mteb's reference wrapper


@pytest.fixture(scope="session")
def lco_encoder(omni_dir: Path) -> Any:
    from mteb.models.model_implementations.lco_embedding_models import LCOEmbedding

    return LCOEmbedding(str(omni_dir), device="cpu")


def _dataset(modality: str, tmp_dir: Path) -> Any:
    """A 3-row ``datasets.Dataset`` with one modality column, as mteb's dataloaders build them."""
    from datasets import Audio, Dataset, Video
    from datasets import Image as ImageFeature

    if modality == "text":
        return Dataset.from_dict({"text": ["hello world", "the quick brown fox", "a red chair"]})
    if modality == "image":
        images = [_image(seed=i, height=40 + 16 * i) for i in range(3)]
        return Dataset.from_dict({"image": images}).cast_column("image", ImageFeature())
    if modality == "image+text":
        images = [_image(seed=i) for i in range(3)]
        data = {"image": images, "text": ["a cat", "a dog", "a fox"]}
        return Dataset.from_dict(data).cast_column("image", ImageFeature())
    if modality == "audio":
        # one clip at 8 kHz exercises the collator's resampling to 16 kHz
        clips = [
            {"array": _audio(0.5 * (i + 1), sampling_rate=rate, seed=i), "sampling_rate": rate}
            for i, rate in enumerate([16000, 8000, 16000])
        ]
        return Dataset.from_dict({"audio": clips}).cast_column("audio", Audio())
    if modality == "video":
        paths = [_write_mp4(tmp_dir / f"clip{i}.mp4", seed=i) for i in range(3)]
        return Dataset.from_dict({"video": paths}).cast_column("video", Video())
    raise AssertionError(modality)


@pytest.mark.parametrize("modality", ["text", "image", "image+text", "audio", "video"])
def test_mteb_lco_embedding_encodes(modality: str, lco_encoder: Any, tmp_path: Path) -> None:
    from mteb._create_dataloaders import _custom_collate_fn
    from torch.utils.data import DataLoader

    dataset = _dataset(modality, tmp_path)
    loader = DataLoader(dataset, batch_size=2, collate_fn=_custom_collate_fn)
    embeddings = lco_encoder.encode(
        loader, task_metadata=None, hf_split="test", hf_subset="default"
    )
    hidden = lco_encoder.model.config.text_config.hidden_size
    assert embeddings.shape == (3, hidden)
    assert embeddings.dtype == torch.float32
    assert torch.isfinite(embeddings).all()
    torch.testing.assert_close(
        embeddings.norm(dim=-1), torch.ones(3), atol=1e-2, rtol=0
    )  # L2-normalised in bf16
    assert not torch.allclose(embeddings[0], embeddings[1])
