"""LCO-Mini behind the backbone interface: the embedded default backbone (see lcoemb.mini)."""

from __future__ import annotations

import os
import re
from typing import Any

import PIL.Image
import torch

from lcoemb.backbones.base import DEFAULT_MAX_TEXT_TOKENS, Backbone, default_device
from lcoemb.inputs import InputError, LoadedItem
from lcoemb.mini.model import MARKERS, MODEL_TYPE, LCOMini, LCOMiniConfig, load_smollm2
from lcoemb.prompts import build_content

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
    """

    family = "lco_mini"
    model_types = (MODEL_TYPE,)
    modalities = frozenset({"text", "image", "audio", "video"})

    def __init__(
        self,
        model: LCOMini,
        tokenizer: Any,
        name_or_path: str,
        *,
        max_text_tokens: int | None = DEFAULT_MAX_TEXT_TOKENS,
        **_: Any,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        self.max_text_tokens = max_text_tokens

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
        dtype is bfloat16, as for every backbone (the reference recipe's precision)."""
        path = os.fspath(name_or_path)
        config = LCOMiniConfig.load(path)
        lm, tokenizer = load_smollm2(dtype or torch.bfloat16)
        model = LCOMini(config, lm)
        model.load_projectors(path)
        model.load_language_model(path)
        model.to(device if device is not None else default_device()).eval()
        return cls(model, tokenizer, path, **kwargs)

    def save_pretrained(self, path: str | os.PathLike[str], *, merged: bool = False) -> None:
        """Write the projectors, plus the LM's decoder layers once they differ from the GGUF:
        after a merge, or when this model was loaded from a folder that carried them."""
        if merged or self.model.mini_config.language_model_weights:
            self.model.save_language_model(path)
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
    def hidden_size(self) -> int:
        return int(self.model.lm.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.lm.config.num_hidden_layers)

    @property
    def language_model(self) -> Any:
        return self.model.lm

    def lora_target_modules(self) -> list[str]:
        names = []
        for name, module in self.model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".lora_" not in name:
                name = name.removesuffix(".base_layer")
                if name.startswith("lm.model.layers."):
                    names.append(name)
        return names

    def enable_gradient_checkpointing(self) -> None:
        self.model.lm.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
        self.model.lm.config.use_cache = False

    # ------------------------------------------------------------------ inputs

    def _media_embeddings(self, items: list[LoadedItem]) -> list[list[torch.Tensor]]:
        """Per item, the embeddings of its media parts in order; towers run once per batch."""
        from lcoemb.mini.towers import load_audio_tower, load_image_tower

        frames: list[PIL.Image.Image] = []
        waves = []
        for item in items:
            for modality, value in item.parts:
                if modality == "image":
                    frames.append(value)
                elif modality == "video":
                    frames += [
                        PIL.Image.fromarray(value[i].permute(1, 2, 0).numpy())
                        for i in self.model.frame_indices(len(value))
                    ]
                elif modality == "audio":
                    waves.append(value)
        device = self.device
        image_features = load_image_tower()(frames).to(device) if frames else None
        audio_feats = load_audio_tower()(waves) if waves else []
        images = [v for item in items for m, v in item.parts if m == "image"]
        reading = iter(self._reading(images))
        out: list[list[torch.Tensor]] = []
        f = a = 0
        for item in items:
            embs = []
            for modality, value in item.parts:
                if modality == "image":
                    embs.append(self.model.embed_image(image_features[f], next(reading)))
                    f += 1
                elif modality == "video":
                    n = len(self.model.frame_indices(len(value)))
                    frame_tokens = self.model.embed_image_features(image_features[f : f + n])
                    embs.append(frame_tokens.flatten(0, 1))
                    f += n
                elif modality == "audio":
                    embs.append(self.model.embed_audio_features(audio_feats[a].to(device)))
                    a += 1
            out.append(embs)
        return out

    def _reading(self, images: list[Any]) -> list[torch.Tensor | None]:
        """Reading tokens per image (video frames get none); ``None`` for a model that does not
        read, so the reading tower is never loaded for it."""
        if not self.model.reads or not images:
            return [None] * len(images)
        from lcoemb.mini.reader import load_text_reader

        return [t.to(self.device) for t in load_text_reader()(images)]

    def prompt(self, item: LoadedItem, instruction: str | None = None) -> str:
        """The templated string the LM reads for ``item``, with a marker where each medium's
        embeddings go (what a text-only peer must be fed to see the same tokens)."""
        return self._template(build_content(item, instruction))

    def _template(self, content: list[dict[str, Any]]) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": _content_to_text(content)}],
            tokenize=False,
            add_generation_prompt=True,
        )

    def _sequence(self, text: str, media: list[torch.Tensor]) -> torch.Tensor:
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

    def prepare(self, items: list[LoadedItem], instruction: str | None = None) -> dict[str, Any]:
        _refuse_marker(instruction, "instruction")
        items = [self.truncate_item(item) for item in items]
        media = self._media_embeddings(items)
        return self._batch(
            [self._sequence(self.prompt(item, instruction), m) for item, m in zip(items, media)]
        )

    def forward(self, inputs: dict[str, Any], *, all_layers: bool = False) -> torch.Tensor:
        out = self.model.lm.model(
            **inputs, output_hidden_states=all_layers, use_cache=False, return_dict=True
        )
        if all_layers:
            return torch.stack([h[:, -1] for h in out.hidden_states])
        return out.last_hidden_state[:, -1]

    def generate(
        self, items: list[LoadedItem], prompt: str, *, max_new_tokens: int = 32, **kwargs: Any
    ) -> list[str]:
        _refuse_marker(prompt, "prompt")
        media = self._media_embeddings(items)
        sequences = []
        for item, m in zip(items, media):
            content = [
                {"type": "text", "text": v} if mod == "text" else {"type": mod}
                for mod, v in item.parts
            ]
            content.append({"type": "text", "text": prompt})
            sequences.append(self._sequence(self._template(content), m))
        batch = self._batch(sequences)
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
