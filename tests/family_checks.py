"""Checks and inputs the backbone-family tests (``test_backbone_*.py``) share.

Plain functions, imported by those modules: deterministic media, the transformers reference
passes written out by hand, mteb reference vectors, and the checks every family runs the same
way (LoRA targets, all-layer states, generation against greedy decoding alone, CLI training).
What differs between families (thresholds aside, which stay in the tests) comes in as
arguments.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoProcessor

from lcoemb import Audio, OmniEncoder, Video
from lcoemb.backbones import ModalityError
from lcoemb.cli import main
from lcoemb.inputs import load_item
from lcoemb.pooling import last_token

SR = 16_000
#: LCO's default suffix (:data:`lcoemb.prompts.SUFFIXES`), written out for the reference passes
SUFFIX = "\nSummarize the above {} in one word:"
TEXTS = [
    "a red square",
    "the quick brown fox jumps over the lazy dog while a small cat sleeps on a warm chair",
    "hello",
    "one two three four five six seven",
]
IMAGE_SIZES = ((56, 56), (90, 120), (40, 200), (300, 280))

# --------------------------------------------------------------------------- media and vectors


def random_images(seed: int, sizes: Iterable[tuple[int, int]] = IMAGE_SIZES) -> list:
    """Noise pictures of the given (height, width) sizes."""
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def frame_clips(
    first: tuple[int, int] = (56, 56), second: tuple[int, int] = (64, 90)
) -> list[list[np.ndarray]]:
    """Two already-sampled clips of different lengths and sizes (frames as HxWx3 uint8): four
    flat grey frames of size ``first``, six noise frames of size ``second``."""
    rng = np.random.default_rng(7)
    return [
        [np.full((*first, 3), 40 * i, np.uint8) for i in range(4)],
        [rng.integers(0, 255, (*second, 3), dtype=np.uint8) for _ in range(6)],
    ]


def as_video_tensors(clips: Iterable[Sequence[np.ndarray]]) -> list[torch.Tensor]:
    """Clips as the (frames, channels, height, width) tensors transformers' processors take."""
    return [torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2) for frames in clips]


def sine(seconds: float, freq: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    """A 16 kHz float32 sine."""
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(rng: np.random.Generator, samples: int, std: float = 0.1) -> np.ndarray:
    """Gaussian float32 noise."""
    return (std * rng.standard_normal(samples)).astype(np.float32)


def beep() -> Audio:
    """Half a second of audio, for the families that must refuse it."""
    return Audio(np.sin(np.arange(8000) / 10).astype(np.float32), sampling_rate=SR)


def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity (broadcasting)."""
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def assert_distinct(vectors: np.ndarray) -> None:
    """A parity check has teeth only if different inputs give clearly different vectors."""
    sims = cos(vectors[:, None], vectors[None])
    assert sims[~np.eye(len(vectors), dtype=bool)].max() < 0.99


def assert_matches(
    encoder: OmniEncoder, items: dict[str, list], expected: dict[str, np.ndarray]
) -> None:
    """Each group of ``items``, encoded as one batch, gives its ``expected`` vectors (cosine
    0.9999), and all the vectors are distinct."""
    ours = {group: encoder.encode(x, batch_size=len(x)) for group, x in items.items()}
    for group in items:
        assert cos(ours[group], expected[group]).min() >= 0.9999, group
    assert_distinct(np.concatenate(list(ours.values())))


# --------------------------------------------------------------------------- references


def load_reference(model_class: type, path: Path, **kwargs: Any) -> tuple[Any, Any]:
    """The checkpoint's transformers model (in eval mode) and processor."""
    return model_class.from_pretrained(path, **kwargs).eval(), AutoProcessor.from_pretrained(path)


def last_token_vectors(model, inputs) -> np.ndarray:
    """The last layer's last-token states of a forward pass, L2-normalised, as float32."""
    with torch.no_grad():
        h = model(**inputs, output_hidden_states=True).hidden_states[-1][:, -1]
    return torch.nn.functional.normalize(h, dim=-1).float().numpy()


def one_turn_inputs(processor, content: list[dict], *, in_template: bool = False, **media):
    """One user turn with ``content``, the processor's chat template with the generation prompt,
    tokenised alone (no padding): by the processor on the rendered prompt, with ``media``, or
    with ``in_template`` by ``apply_chat_template`` itself (media inline in ``content``)."""
    messages = [{"role": "user", "content": content}]
    if in_template:
        return processor.apply_chat_template(
            messages,
            tokenize=True,
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
        )
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[prompt], return_tensors="pt", **media)


def reference_alone(model, processor, content: list[dict], **media) -> np.ndarray:
    """The recipe by hand for one item: its user turn alone, the last layer's last token."""
    return last_token_vectors(model, one_turn_inputs(processor, content, **media))[0]


def reference_batch(
    model, processor, modality: str, parts: list[list[dict]], *, prompt_start: str, **media
) -> np.ndarray:
    """The recipe by hand for a batch: one user turn per entry of ``parts`` (its content, then
    the ``modality``'s suffix), the chat template with the generation prompt (each prompt must
    start with ``prompt_start``), one batch that must be left-padded if it holds more than one
    item, the last layer's last token."""
    suffix = {"type": "text", "text": SUFFIX.format(modality)}
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [*part, suffix]}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for part in parts
    ]
    assert all(p.startswith(prompt_start) for p in prompts)
    inputs = processor(text=prompts, padding=True, return_tensors="pt", **media)
    if len(parts) > 1:
        mask = inputs["attention_mask"]
        assert mask[:, -1].all() and not mask[:, 0].all()  # left padding, and some of it
    return last_token_vectors(model, inputs)


def reference_batches(
    model,
    processor,
    *,
    prompt_start: str,
    images: list,
    clips: list[list[np.ndarray]],
    **videos_kwargs: Any,
) -> tuple[dict[str, list], dict[str, np.ndarray]]:
    """:data:`TEXTS`, ``images`` and the already-sampled ``clips`` each as one reference batch
    (:func:`reference_batch`; the clips as frame tensors, not resampled, ``videos_kwargs`` on
    top): the items for our encoder and the vectors it must give, by modality."""
    direct = functools.partial(reference_batch, model, processor, prompt_start=prompt_start)
    expected = {
        "text": direct("text", [[{"type": "text", "text": t}] for t in TEXTS]),
        "image": direct("image", [[{"type": "image"}]] * len(images), images=images),
        "video": direct(
            "video",
            [[{"type": "video"}]] * len(clips),
            videos=as_video_tensors(clips),
            videos_kwargs={"do_sample_frames": False, **videos_kwargs},
        ),
    }
    items = {"text": TEXTS, "image": images, "video": [Video(frames) for frames in clips]}
    return items, expected


def mteb_vectors(
    model, column: str, values, feature=None, *, instruction: str | None = None
) -> np.ndarray:
    """An mteb wrapper's vectors for ``values`` of one modality, through mteb's own data path
    (the first task of that modality alone, batches of 4). With ``instruction``, the wrapper's
    instruction for that task must be it."""
    import datasets
    import mteb
    from mteb._create_dataloaders import create_dataloader

    features = datasets.Features({column: feature}) if feature is not None else None
    ds = datasets.Dataset.from_dict({column: values}, features=features)
    meta = mteb.get_tasks(modalities=[column], exclusive_modality_filter=True)[0].metadata
    if instruction is not None:
        assert model.get_task_instruction(meta, None) == instruction  # no task prompt
    loader = create_dataloader(ds, task_metadata=meta, batch_size=4)
    out = model.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default")
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- shared checks


def assert_audio_refused(encoder: OmniEncoder, family: str, image) -> None:
    """Audio is refused naming the item, alone in a mixed batch and inside an interleaved one."""
    with pytest.raises(ModalityError, match=rf"item 2: {family} backbone .* cannot encode audio"):
        encoder.encode(["fine", image, beep()])
    with pytest.raises(ModalityError, match=r"item 0: .*cannot encode audio"):
        encoder.encode([["a caption", beep()]])


def linear_names(model: torch.nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def assert_lora_targets(
    backbone,
    *,
    is_tower: Callable[[str], bool],
    per_layer: int | None,
    prefix: str = "model.language_model.layers.",
) -> tuple[list[str], list[str]]:
    """LoRA targets the language model only: every target starts with ``prefix``, there are
    ``per_layer`` of them per decoder layer (unless ``None``), none is one of the towers' Linear
    layers (the names ``is_tower`` accepts; there must be some) or ``lm_head``. Returns the
    targets and the towers' Linear names."""
    targets = backbone.lora_target_modules()
    if per_layer is not None:
        assert len(targets) == per_layer * backbone.num_layers
    assert all(t.startswith(prefix) for t in targets)
    towers = [n for n in linear_names(backbone.model) if is_tower(n)]
    assert towers and not set(towers) & set(targets)
    assert "lm_head" not in targets
    return targets, towers


def assert_all_layer_states(backbone, items: list, *, tol: float = 1e-4):
    """Every layer's states (embeddings first) for ``items`` in one batch; the last, pooled, is
    what the plain forward pass pools. Returns the inputs, the states and the pooled states."""
    inputs = backbone.prepare([load_item(x, i) for i, x in enumerate(items)])
    with torch.no_grad():
        layers = backbone.forward(inputs, all_layers=True)
        final = last_token(backbone.forward(inputs))
    assert len(layers.states) == backbone.num_layers + 1
    pooled = last_token(layers)
    assert pooled.shape == (backbone.num_layers + 1, len(items), backbone.hidden_size)
    torch.testing.assert_close(pooled[-1], final, rtol=tol, atol=tol)
    return inputs, layers, pooled


def assert_generate_matches_greedy(
    encoder: OmniEncoder,
    model_class: type,
    path: Path,
    cases: list[tuple[Any, list[dict], dict]],
    *,
    nonempty: bool,
    in_template: bool = False,
) -> None:
    """Batched, left-padded generation (``"Describe:"``, four new tokens) gives each item what
    greedy decoding of its prompt alone gives, without the prompt (and with ``nonempty`` some
    text for every item). ``cases``: each item, the content of its user turn alone and the media
    for the processor (see :func:`one_turn_inputs`)."""
    out = encoder.generate([c[0] for c in cases], "Describe:", max_new_tokens=4, batch_size=8)
    assert len(out) == len(cases) and all(isinstance(s, str) for s in out)
    if nonempty:
        assert all(out)

    model, processor = load_reference(model_class, path)
    expected = []
    for _, content, media in cases:
        inputs = one_turn_inputs(processor, content, in_template=in_template, **media)
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        expected.append(
            processor.tokenizer.decode(
                ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
        )
    assert out == expected


def describe_cases(image, clip: np.ndarray | None = None) -> list[tuple[Any, list[dict], dict]]:
    """:func:`assert_generate_matches_greedy` cases for ``TEXTS[1:3]``, ``image`` and (if given)
    the 16 kHz audio ``clip``: each as a content part followed by ``"Describe:"``, the media
    handed to the processor."""
    prompt = {"type": "text", "text": "Describe:"}
    cases = [(t, [{"type": "text", "text": t}, prompt], {}) for t in TEXTS[1:3]]
    cases.append((image, [{"type": "image"}, prompt], {"images": [image]}))
    if clip is not None:
        cases.append((Audio(clip, SR), [{"type": "audio"}, prompt], {"audio": [clip]}))
    return cases


def train_via_cli(model_path: Path, tmp_path: Path, rows: list[dict]) -> Path:
    """Three LoRA steps of ``lcoemb train`` on ``rows`` (fp32, CPU); returns the adapter."""
    data = tmp_path / "triplets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["train", "--model", str(model_path), "--data", str(data), "--output", str(out)]
    args += ["--max-steps", "3", "--batch-size", "4", "--mini-batch-size", "2"]
    args += ["--lora-r", "4", "--lora-alpha", "8", "--device", "cpu", "--precision", "fp32"]
    args += ["--lr", "2e-3", "--warmup-steps", "1"]
    assert main(args) == 0
    return out / "adapter"


def colour_rows(colours: Iterable[str]) -> list[dict]:
    return [{"anchor": f"a {c} circle", "positive": f"the circle is {c}"} for c in colours]


def image_row(path: Path, image, positive: str) -> dict:
    """A training row whose anchor is ``image``, saved to ``path``."""
    image.save(path)
    return {"anchor": {"image": str(path)}, "positive": positive}


def assert_adapter_targets(adapter: Path, prefix: str) -> None:
    """The adapter's saved targets exist and all start with ``prefix``."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["target_modules"] and all(t.startswith(prefix) for t in config["target_modules"])


def assert_adapter_changes_vectors(model_path: Path, adapter: Path, items: list) -> None:
    """The adapter moves the float32 vectors of ``items``."""
    base = OmniEncoder.from_pretrained(model_path, device="cpu", dtype="float32")
    adapted = OmniEncoder.from_pretrained(
        model_path, adapter=adapter, device="cpu", dtype="float32"
    )
    assert cos(base.encode(items), adapted.encode(items)).max() < 0.9999
