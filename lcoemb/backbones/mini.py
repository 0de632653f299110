"""LCO-Mini behind the backbone interface: the embedded default backbone (see lcoemb.mini).

What it shares with every backbone (the prompt, LoRA targets, gradient checkpointing, the
forward pass to hidden states) comes from :class:`~lcoemb.backbones.base.Backbone`; this module
adds loading and saving, SmolLM2's chat template with media markers, and media embeddings
spliced into the prompt through ``inputs_embeds``.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

import PIL.Image
import torch

from lcoemb.backbones import fastpath
from lcoemb.backbones.base import DEFAULT_MAX_TEXT_TOKENS, Backbone
from lcoemb.devices import default_device, default_dtype
from lcoemb.inputs import InputError, LoadedItem
from lcoemb.mini.model import MARKERS, MODEL_TYPE, LCOMini, LCOMiniConfig, load_smollm2
from lcoemb.mini.reader import DETECT_SIZE, TextReader, load_text_reader
from lcoemb.mini.towers import load_audio_tower, load_image_tower

_SPLIT = re.compile("(" + "|".join(re.escape(m) for m in MARKERS.values()) + ")")
_MODALITY_OF = {marker: modality for modality, marker in MARKERS.items()}


def _marker_in(text: str) -> str | None:
    """The first media marker inside ``text``, if any: user text holding one would take a
    medium's place in the prompt."""
    found = _SPLIT.search(text)
    return found.group() if found else None


def _refuse_marker(text: str | None, what: str) -> None:
    """Raise for an instruction or generation prompt holding a media marker."""
    marker = _marker_in(text or "")
    if marker is not None:
        raise ValueError(f"the {what} contains {marker!r}, LCO-Mini's media marker")


def _content_to_text(content: list[dict[str, Any]]) -> str:
    """SmolLM2's template takes string content: text parts verbatim, media as markers."""
    return "".join(c["text"] if c["type"] == "text" else MARKERS[c["type"]] for c in content)


class MiniBackbone(Backbone):
    """SmolLM2-135M + EfficientNet-Lite0 + Whisper tiny with trained projectors.

    Prompts follow the LCO-EMB recipe with SmolLM2's own chat template; media embeddings replace
    the markers. Positions are computed from the attention mask, so left padding does not shift
    a sequence's positions.

    Encoding runs SmolLM2 (a Llama) through :mod:`lcoemb.backbones.fastpath`: each batch's
    shared chat-template prefix once, attention per row, the last layer's MLP for the pooled
    token only; with the image tower run per item (:attr:`batch_invariant`), every vector is
    bit-identical in bf16 to the one the model's own forward gives the item encoded alone, on
    CPUs whose GEMMs give a row the same bits whatever the number of rows (elsewhere batched
    vectors differ at the plain forward's own batch noise, cosine ~0.9994). Training keeps the
    plain forward (:attr:`fast_path_with_grad`), on which the shipped projectors and adapter
    were trained.

    ``max_image_pixels`` sets the side the reading tower's text detector sees (by default
    :data:`~lcoemb.mini.reader.DETECT_SIZE`, 448): the largest multiple of 32 whose square
    fits, never above 448. Detection is most of an image's cost, so a smaller side is faster but
    reads less and changes the vectors of images with text (``benchmarks/README.md``, "LCO-Mini
    on 2 cores", has the measured trade-off). EfficientNet always sees 224×224. Another opt-in
    that changes some of those vectors, for speed on a CPU with fast bf16, is the fused detector:
    ``backbone.text_reader = load_text_reader(fused=True)``
    (:func:`~lcoemb.mini.reader.fuse_detector`); on other CPUs, which run the detector in
    float32, it is exact to the last bits and the default.
    """

    family = "lco_mini"
    model_types = (MODEL_TYPE,)
    modalities = frozenset({"text", "image", "audio", "video"})
    language_model_prefix = "lm.model.layers."
    fast_path_with_grad = False
    #: on two CPU cores, batches of 32 encoded every modality faster than batches of 8 (short
    #: captions 93 against 65 per second: the shared prompt prefix is computed once per batch;
    #: images 6.3-7.5 against 5.5-6.4; ``benchmarks/README.md``), and a 135M model's batch of
    #: 32 clips stays small in memory
    default_batch_size = 32

    def __init__(
        self,
        model: LCOMini,
        tokenizer: Any,
        name_or_path: str,
        *,
        max_text_tokens: int | None = DEFAULT_MAX_TEXT_TOKENS,
        max_image_pixels: int | None = None,
        **_: Any,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        self.max_text_tokens = max_text_tokens
        self.max_image_pixels = max_image_pixels
        #: run the image tower per item rather than per batch: EfficientNet's float32
        #: convolutions pick their algorithm by batch size, which moves its features by ~2e-6,
        #: and SmolLM2 in bf16 turns that into cosines of 0.999 between an image's vectors in
        #: two batches; per item (with the fast text path), every vector is the item's own,
        #: encoded alone (bit-identical where the CPU's GEMMs are, see the class docstring).
        #: Off, the tower sees the whole batch (the plain path)
        self.batch_invariant = True
        #: the reading tower this backbone uses; None until the first image needs it (a model
        #: that does not read never loads one), then the process-wide reader at the detection
        #: side ``max_image_pixels`` gives. A benchmark or test may set its own.
        self.text_reader: TextReader | None = None
        # installed once, on this model instance only (see fastpath.install_last_token_path)
        self.fast_text_path = fastpath.supports_fast_path(model.lm.model)
        if self.fast_text_path:
            fastpath.install_last_token_path(model.lm.model)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        **kwargs: Any,
    ) -> MiniBackbone:
        """Build the LM from its GGUF and load the projectors of a folder written by
        :meth:`save_pretrained` (and its LM layers, for a folder with a merged LoRA). The default
        dtype is :func:`~lcoemb.devices.default_dtype`'s, as for every backbone: bfloat16 where
        the device computes it fast, else float32."""
        path = os.fspath(name_or_path)
        config = LCOMiniConfig.load(path)
        lm, tokenizer = load_smollm2(dtype or default_dtype(device))
        model = LCOMini(config, lm)
        model.load_projectors(path)
        model.load_language_model(path)
        model.to(device if device is not None else default_device()).eval()
        return cls(model, tokenizer, path, **kwargs)

    def save_pretrained(self, path: str | os.PathLike[str], *, merged: bool = False) -> None:
        """Write the projectors, plus the LM's decoder layers once they differ from the GGUF:
        after a merge, or when this model was loaded from a folder that carried them; else the
        stage-1 LM LoRA, if the model has one."""
        if merged or self.model.mini_config.language_model_weights:
            self.model.save_language_model(path)
        elif self.model.mini_config.language_model_lora:
            self.model.save_lm_lora(path)
        self.model.save_projectors(path)

    def check_item(self, item: LoadedItem, index: int) -> None:
        """Also refuse text holding a media marker, which the prompt would read as a medium."""
        super().check_item(item, index)
        for modality, value in item.parts:
            marker = _marker_in(value) if modality == "text" else None
            if marker is not None:
                raise InputError(
                    index, f"text contains {marker!r}, LCO-Mini's media marker; remove it"
                )

    @property
    def language_model(self) -> Any:
        return self.model.lm

    @property
    def transformers_model(self) -> Any:
        """SmolLM2 (the towers and projectors around it are not transformers modules)."""
        return self.model.lm

    # ------------------------------------------------------------------ inputs

    def _media_embeddings(self, items: list[LoadedItem]) -> list[list[torch.Tensor]]:
        """Per item, the embeddings of its media parts in order. The audio tower and the reader
        run once per batch (their outputs do not depend on it); the image tower once per item
        when :attr:`batch_invariant`, else once per batch."""
        frames: list[list[PIL.Image.Image]] = []  # per item: its images and video frames
        waves = []
        for item in items:
            frames.append([])
            for modality, value in item.parts:
                if modality == "image":
                    frames[-1].append(value)
                elif modality == "video":
                    frames[-1] += [
                        PIL.Image.fromarray(value[i].permute(1, 2, 0).numpy())
                        for i in self.model.frame_indices(len(value))
                    ]
                elif modality == "audio":
                    waves.append(value)
        device = self.device
        chunks = frames if self.batch_invariant else [[f for fs in frames for f in fs]]
        tower = load_image_tower()
        bins = self.model.mini_config.image_colour_bins if self.model.sees_colour else 0
        shapes = self.model.sees_shape
        seen = [tower.see(chunk, bins, shapes) for chunk in chunks if chunk]
        image_features = torch.cat([t for t, _ in seen]).to(device) if seen else None
        extras = torch.cat([c for _, c in seen]).to(device) if seen and (bins or shapes) else None
        audio_feats, transcripts = self._listen(waves)
        images = [v for item in items for m, v in item.parts if m == "image"]
        reading = iter(self._reading(images))
        out: list[list[torch.Tensor]] = []
        f = a = 0
        for item in items:
            embs = []
            for modality, value in item.parts:
                if modality == "image":
                    cells = None if extras is None else extras[f]
                    embs.append(self.model.embed_image(image_features[f], next(reading), cells))
                    f += 1
                elif modality == "video":
                    n = len(self.model.frame_indices(len(value)))
                    frame_tokens = self.model.embed_image_features(
                        image_features[f : f + n], None if extras is None else extras[f : f + n]
                    )
                    embs.append(frame_tokens.flatten(0, 1))
                    f += n
                elif modality == "audio":
                    embs.append(self.model.embed_audio(audio_feats[a].to(device), transcripts[a]))
                    a += 1
            out.append(embs)
        return out

    def _listen(self, waves: list[Any]) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """The audio tower's features per clip, and the token ids of Whisper's transcript per
        clip for a model that transcribes (``None`` for one that does not: Whisper's decoder
        never runs for it)."""
        if not waves:
            return [], []
        if not self.model.transcribes:
            return load_audio_tower()(waves), [None] * len(waves)
        features, texts = load_audio_tower().listen(waves)
        return features, self.transcript_ids(texts)

    def transcript_ids(self, texts: list[str]) -> list[torch.Tensor]:
        """Transcripts as the LM's token ids, at most the config's ``transcript_tokens`` each."""
        cap = self.model.mini_config.transcript_tokens
        ids = self.tokenizer(texts, add_special_tokens=False).input_ids if texts else []
        return [torch.tensor(i[:cap], dtype=torch.long) for i in ids]

    @property
    def detect_size(self) -> int:
        """The side the text detector sees: :data:`~lcoemb.mini.reader.DETECT_SIZE`, or the
        largest multiple of 32 whose square fits in ``max_image_pixels`` (at least 32)."""
        if self.max_image_pixels is None:
            return DETECT_SIZE
        return min(DETECT_SIZE, max(1, math.isqrt(self.max_image_pixels) // 32) * 32)

    def _reading(self, images: list[Any]) -> list[torch.Tensor | None]:
        """Reading tokens per image (video frames get none); ``None`` for a model that does not
        read, so the reading tower is never loaded for it."""
        if not self.model.reads or not images:
            return [None] * len(images)
        if self.text_reader is None:
            shared = load_text_reader()
            if shared.detect_size != self.detect_size:  # the same networks, another side
                shared = TextReader(
                    shared.detector, shared.recognizer, shared.device, detect_size=self.detect_size
                )
            self.text_reader = shared
        return [t.to(self.device) for t in self.text_reader(images)]

    def template(self, messages: list[dict[str, Any]]) -> str:
        """SmolLM2's chat template; it takes string content, so each medium is its marker."""
        messages = [{**m, "content": _content_to_text(m["content"])} for m in messages]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def embed_prompt(self, text: str, media: list[torch.Tensor]) -> torch.Tensor:
        """The LM input embeddings ``(n, d)`` of a templated prompt (:meth:`prompt`), each media
        marker replaced by the next of ``media`` (its ``(tokens, d)`` embeddings), in the input
        embeddings' dtype. What :meth:`model_inputs` batches, and what a recipe feeds the LM."""
        pieces, media_iter = [], iter(media)
        embed = self.model.input_embeddings
        for piece in _SPLIT.split(text):
            if piece in _MODALITY_OF:
                pieces.append(next(media_iter))
            elif piece:
                ids = self.tokenizer(piece, add_special_tokens=False, return_tensors="pt")
                pieces.append(embed(ids.input_ids[0].to(self.device)))
        return torch.cat([p.to(embed.weight.dtype) for p in pieces])

    def _batch(self, sequences: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Left-pad embedding sequences; positions count real tokens only."""
        length = max(len(s) for s in sequences)
        d = sequences[0].shape[-1]
        embeds = sequences[0].new_zeros(len(sequences), length, d)
        mask = torch.zeros(len(sequences), length, dtype=torch.long, device=embeds.device)
        for i, s in enumerate(sequences):
            embeds[i, length - len(s) :] = s
            mask[i, length - len(s) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions}

    def model_inputs(self, texts: list[str], items: list[LoadedItem]) -> dict[str, Any]:
        """``inputs_embeds`` (the prompts with the items' media spliced in), the mask and
        positions that skip the left padding."""
        media = self._media_embeddings(items)
        return self._batch([self.embed_prompt(text, m) for text, m in zip(texts, media)])

    def prepare(self, items: list[LoadedItem], instruction: str | None = None) -> dict[str, Any]:
        _refuse_marker(instruction, "instruction")
        return super().prepare(items, instruction)

    def generate(
        self, items: list[LoadedItem], prompt: str, *, max_new_tokens: int = 32, **kwargs: Any
    ) -> list[str]:
        _refuse_marker(prompt, "prompt")
        batch = self.model_inputs([self.prompt(item, suffix=prompt) for item in items], items)
        batch.pop("position_ids")  # generate derives positions from the mask itself
        kwargs.setdefault("do_sample", False)
        with torch.inference_mode():
            out = self.model.lm.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
        return [s.strip() for s in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
