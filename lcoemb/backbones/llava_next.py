"""LLaVA-NeXT: text and image (the backbone of E5-V).

E5-V (``royokong/e5-v``, built on ``llama3-llava-next-8b``) is the published embedder on this
family, and LCO-EMB's one-word-summary prompt comes from it. So this family's default suffixes
are E5-V's wording (:data:`E5V_SUFFIXES`): ``"\\nSummary above sentence in one word: "`` for
text and ``"\\nSummary above image in one word: "`` for images, trailing space included, and the
same pattern for the other keys. ``OmniEncoder.from_pretrained(prompt_suffixes=...)`` replaces
any of them (e.g. with :data:`lcoemb.prompts.SUFFIXES`, LCO-EMB's). E5-V's prompt for an image
with a text (``Modify this image with "..." Describe modified image in one word:``) is a task
prompt for composed retrieval and is not a default: an image with a caption gets the image
suffix, as in every family.

The prompt goes through the checkpoint's own chat template, as for every family. A user turn
reaches it as its media first, then all its text as one part (:meth:`LlavaNextBackbone.template`):
the ``llava-hf`` Llama-3 template hoists images before the text anyway, and closes every text
part with its own ``<|eot_id|>``, so separate instruction, text and suffix parts would end the
turn three times. The tokenizer adds ``<|begin_of_text|>``; the template does not.

E5-V itself builds its prompt by hand (mteb's ``E5VModel``)::

    <|start_header_id|>user<|end_header_id|>\\n\\n<sent>\\nSummary above sentence in one word:
    <|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n \\n

(one line, with a space after the colon). The ``llava-hf`` template differs in two places: a
newline before the text (it writes ``"\\n" + text``) and no ``" \\n"`` after the assistant
header. :data:`E5V_CHAT_TEMPLATE` is E5-V's string as a chat template: save a checkpoint's
processor with it to get E5-V's vectors exactly (tested against mteb's wrapper); a checkpoint
that ships no chat template at all is read with it. On the tiny random test model the
``llava-hf`` template's vectors are at cosine 0.27-0.74 (text) and 0.59-0.94 (image) from
E5-V's: a random model amplifies any prompt change and a trained one much less, but E5-V was
trained on its exact string.

Positions count each row's real tokens only
(:attr:`~lcoemb.backbones.HFChatBackbone.positions_from_mask`), so an item's vector does not
depend on the padding its batch gives it.

LLaVA-NeXT's image resolution is its processor's any-resolution grid
(``image_grid_pinpoints``), so ``max_image_pixels`` is refused rather than ignored.

The text fast path (:mod:`lcoemb.backbones.fastpath`) applies: a Llama layer is the one it
rebuilds, with one-dimensional RoPE. The vision fast path does not (a CLIP tower, no
``model.model.visual``).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

from lcoemb.backbones.base import DEFAULT_MAX_TEXT_TOKENS, HFChatBackbone

__all__ = ["E5V_CHAT_TEMPLATE", "E5V_SUFFIXES", "LlavaNextBackbone"]

#: E5-V's one-word-summary suffixes: text and image verbatim from its prompts; the other keys
#: (a suffix table has every key) in the same words.
E5V_SUFFIXES: dict[str, str] = {
    "text": "\nSummary above sentence in one word: ",
    "image": "\nSummary above image in one word: ",
    "audio": "\nSummary above audio in one word: ",
    "video": "\nSummary above video in one word: ",
    "interleaved": "\nSummary above input in one word: ",
}

#: E5-V's hand-built Llama-3 prompt as a chat template: each part in order (``<image>`` for an
#: image), one ``<|eot_id|>`` per turn, and E5-V's ``" \n"`` after the assistant header.
E5V_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>' }}"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n \\n' }}"
    "{% endif %}"
)


def media_then_text(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A user turn's parts as LLaVA-NeXT's template reads them: the media in order, then all
    text parts joined into one."""
    media = [part for part in content if part["type"] != "text"]
    text = "".join(part["text"] for part in content if part["type"] == "text")
    return [*media, {"type": "text", "text": text}] if text else media


class LlavaNextBackbone(HFChatBackbone):
    family = "llava_next"
    model_types = ("llava_next",)
    modalities = frozenset({"text", "image"})
    model_class = LlavaNextForConditionalGeneration
    processor_class = LlavaNextProcessor
    positions_from_mask = True
    suffixes = E5V_SUFFIXES

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        name_or_path: str,
        *,
        max_text_tokens: int | None = DEFAULT_MAX_TEXT_TOKENS,
        max_image_pixels: int | None = None,
        max_video_pixels: int | None = None,
    ):
        if max_image_pixels is not None:
            raise ValueError(
                "llava_next: max_image_pixels is not supported; the image resolution is set by "
                "the processor's image_grid_pinpoints"
            )
        super().__init__(
            model,
            processor,
            name_or_path,
            max_text_tokens=max_text_tokens,
            max_video_pixels=max_video_pixels,
        )

    def template(self, messages: list[dict[str, Any]]) -> str:
        """The checkpoint's chat template over each turn's media then its text as one part
        (:func:`media_then_text`); :data:`E5V_CHAT_TEMPLATE` if the checkpoint has none."""
        messages = [
            {**m, "content": media_then_text(m["content"])} if isinstance(m["content"], list) else m
            for m in messages
        ]
        return self.processor.apply_chat_template(
            messages,
            chat_template=None if self.processor.chat_template else E5V_CHAT_TEMPLATE,
            tokenize=False,
            add_generation_prompt=True,
        )
