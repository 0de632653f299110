"""Export a model as a sentence-transformers folder that gives lcoemb's vectors.

``SentenceTransformer(folder).encode(...)`` must give what :meth:`lcoemb.OmniEncoder.encode`
gives, with stock sentence-transformers modules only (no lcoemb code at load time), so the folder
holds:

* the checkpoint with any LoRA adapter merged into its weights (``merge_and_unload``) and its
  processor, written by :meth:`lcoemb.OmniEncoder.save_pretrained` (``lcoemb.json`` included, so
  lcoemb loads the folder too);
* ``chat_template.jinja``: the checkpoint's own chat template behind a preamble that builds the
  LCO-EMB user turn (:func:`lco_chat_template`). sentence-transformers sends every input through
  the chat template as one user turn and turns its ``prompt`` into a system message, so the
  one-word-summary suffix, which depends on the input's modalities, can only be added there;
* ``modules.json``: Transformer -> Pooling (``lasttoken``) -> Normalize. Without it
  sentence-transformers builds its default pipeline and mean-pools, without a word;
* ``sentence_bert_config.json`` (the Transformer module: task, modalities, processor kwargs),
  ``1_Pooling/config.json``, ``2_Normalize/config.json`` and
  ``config_sentence_transformers.json``.

sentence-transformers loads the weights with transformers' ``AutoModel``, which gives a family's
``*Model`` (the ``*ForConditionalGeneration`` without its LM head): exactly the module lcoemb's
:meth:`~lcoemb.backbones.Backbone.forward` runs. A family whose checkpoint ``AutoModel`` cannot
load that way, or whose backbone builds its prompt otherwise than with the checkpoint's template
over the user turn, is refused with the reason (:data:`REFUSED_FAMILIES`), and so is one this
module does not know. Every export is loaded back and compared with lcoemb before it is kept.

What the folder cannot reproduce, since a chat template cannot count tokens: lcoemb cuts each
text part to 300 token ids *before* templating (``max_text_tokens``); sentence-transformers only
truncates whole prompts at ``max_seq_length``. Texts under 300 tokens give the same vectors.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lcoemb.backbones import Backbone, HFChatBackbone, backbone_class
from lcoemb.encoder import OmniEncoder, locate
from lcoemb.inputs import CONTENT_ORDER, TARGET_SAMPLING_RATE, Audio, LoadedItem
from lcoemb.prompts import SUFFIX_PRIORITY, SUFFIXES

__all__ = [
    "EXPORTABLE_FAMILIES",
    "REFUSED_FAMILIES",
    "ExportError",
    "export_sentence_transformers",
    "lco_chat_template",
]

#: Families whose checkpoints sentence-transformers loads through its ``Transformer`` module and
#: runs as lcoemb does: a transformers ``*ForConditionalGeneration`` whose ``model`` attribute is
#: the class ``AutoModel`` gives for its config, a processor whose chat template iterates
#: ``messages``, and a backbone that builds its prompt with that template unchanged
#: (:class:`~lcoemb.backbones.HFChatBackbone`'s ``template``, ``prompt`` and ``prepare``). The
#: Qwen2.5 families are checked end to end by the tests; every export is checked before it is
#: kept (``verify``).
EXPORTABLE_FAMILIES: dict[str, str] = {
    "qwen2_5_omni": "Qwen2.5-Omni thinker (AutoModel: Qwen2_5OmniThinkerModel)",
    "qwen2_5_vl": "Qwen2.5-VL (AutoModel: Qwen2_5_VLModel)",
    "qwen2_vl": "Qwen2-VL (AutoModel: Qwen2VLModel)",
    "qwen3_vl": "Qwen3-VL (AutoModel: Qwen3VLModel)",
    "qwen3_omni": "Qwen3-Omni thinker (AutoModel: Qwen3OmniMoeThinkerModel)",
    "smolvlm": "SmolVLM / Idefics3 (AutoModel: SmolVLMModel, Idefics3Model)",
    "gemma3n": "Gemma 3n (AutoModel: Gemma3nModel)",
}

#: Families that cannot be exported, and why.
REFUSED_FAMILIES: dict[str, str] = {
    "lco_mini": "LCO-Mini is not a transformers checkpoint: its language model is rebuilt from a "
    "GGUF file and its towers and projectors are lcoemb's own modules (model_type 'lco_mini'), "
    "so transformers' AutoModel, which sentence-transformers loads models with, cannot load it. "
    "Use lcoemb itself (OmniEncoder, `lcoemb encode` or `lcoemb serve`) for LCO-Mini",
    "llava_next": "lcoemb does not give LLaVA-NeXT's chat template the user turn as it is: it "
    "puts the media first and joins every text part into one (the llava-hf Llama-3 template "
    "closes each text part with <|eot_id|>), uses E5-V's template for a checkpoint without one, "
    "and counts each row's positions from its first real token; sentence-transformers sends the "
    "turn to the template part by part, so its vectors would differ",
}

#: HFChatBackbone methods that build the prompt and the model inputs: a backbone that overrides
#: one of them reads the checkpoint differently from what the exported folder does.
_PROMPT_METHODS = ("template", "prompt", "prepare")

#: Cosine below which an exported folder is rejected by ``verify``. bf16 checkpoints differ from
#: lcoemb's fast path in rounding only; float32 ones agree to ~1e-6.
MIN_COSINE = 0.999

_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
_POOLING = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
_NORMALIZE = "sentence_transformers.base.modules.normalize.Normalize"


class ExportError(ValueError):
    """The model cannot be exported, or its export would not give lcoemb's vectors."""


# --------------------------------------------------------------------------- the chat template


def _jinja_string(value: str) -> str:
    """A Jinja string literal for ``value`` (JSON's escapes are Jinja's)."""
    return json.dumps(value)


def lco_chat_template(base: str, suffixes: Mapping[str, str] = SUFFIXES) -> str:
    """The chat template that turns what sentence-transformers sends into lcoemb's prompt.

    A preamble rewrites ``messages`` and then ``base`` (the checkpoint's own template) renders
    them, with ``add_generation_prompt`` always on (the recipe pools the token after the
    assistant prompt). The last user turn becomes what :func:`lcoemb.prompts.build_content`
    builds:

    * system messages (sentence-transformers' ``prompt``) become the instruction, a first text
      part ending in a newline, as ``OmniEncoder.encode(..., instruction=...)`` puts it;
    * the parts are laid out video, audio, image, text (a composite's order; the order within a
      modality is kept), unless the turn has ``"interleaved": true``, which keeps the user's
      order as for an interleaved list;
    * the one-word-summary suffix from ``suffixes`` (keyed like :data:`lcoemb.prompts.SUFFIXES`;
      a backbone's :attr:`~lcoemb.backbones.Backbone.suffixes`) follows: the interleaved one for
      an interleaved turn, else the first of image > video > audio present, else text
      (:func:`lcoemb.prompts.suffix_for`).

    A user turn that already ends with an LCO suffix is rendered as it is, so lcoemb, which
    builds the turn itself, reads the exported folder with the same prompts.
    """
    table = ", ".join(f"{_jinja_string(k)}: {_jinja_string(suffixes[k])}" for k in SUFFIXES)
    order = ", ".join(_jinja_string(m) for m in CONTENT_ORDER)
    priority = ", ".join(_jinja_string(m) for m in SUFFIX_PRIORITY)
    preamble = (
        "{#- LCO-EMB embedding prompt (written by `lcoemb export`): the last user turn becomes "
        "[instruction] + parts + one-word-summary suffix. -#}\n"
        "{%- set lco_suffixes = {" + table + "} -%}\n"
        "{%- set lco_order = [" + order + "] -%}\n"
        "{%- set lco_priority = [" + priority + "] -%}\n"
        "{%- set lco = namespace(last=-1, raw=false, instruction='', typed=[], kinds=[], "
        "parts=[], messages=[], suffix='') -%}\n"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{%- set lco.last = loop.index0 -%}{%- endif -%}"
        "{%- endfor -%}\n"
        "{%- if lco.last < 0 -%}{%- set lco.raw = true -%}{%- else -%}"
        "{%- set lco_content = messages[lco.last]['content'] -%}"
        "{%- if lco_content is not string and lco_content | length > 0 "
        "and lco_content[-1]['type'] == 'text' "
        "and lco_content[-1]['text'] in lco_suffixes.values() | list -%}"
        "{%- set lco.raw = true -%}{%- endif -%}"
        "{%- endif -%}\n"
        "{%- if not lco.raw -%}\n"
        # the parts of the last user turn, each with its modality
        "{%- if lco_content is string -%}"
        "{%- set lco.typed = [['text', {'type': 'text', 'text': lco_content}]] -%}"
        "{%- else -%}{%- for part in lco_content -%}"
        "{%- if part['type'] is defined -%}{%- set kind = part['type'] -%}"
        "{%- elif part['image'] is defined -%}{%- set kind = 'image' -%}"
        "{%- elif part['video'] is defined -%}{%- set kind = 'video' -%}"
        "{%- elif part['audio'] is defined -%}{%- set kind = 'audio' -%}"
        "{%- else -%}{%- set kind = 'text' -%}{%- endif -%}"
        "{%- if kind == 'image_url' -%}{%- set kind = 'image' -%}{%- endif -%}"
        "{%- set lco.typed = lco.typed + [[kind, part]] -%}"
        "{%- set lco.kinds = lco.kinds + [kind] -%}"
        "{%- endfor -%}{%- endif -%}\n"
        "{%- set lco_interleaved = messages[lco.last]['interleaved'] is defined "
        "and messages[lco.last]['interleaved'] -%}\n"
        # the instruction: the text of every system message
        "{%- for message in messages if message['role'] == 'system' -%}"
        "{%- if message['content'] is string -%}"
        "{%- set lco.instruction = lco.instruction + message['content'] -%}"
        "{%- else -%}{%- for part in message['content'] if part['text'] is defined -%}"
        "{%- set lco.instruction = lco.instruction + part['text'] -%}"
        "{%- endfor -%}{%- endif -%}"
        "{%- endfor -%}\n"
        "{%- if lco.instruction -%}"
        "{%- set lco.parts = [{'type': 'text', 'text': lco.instruction + '\\n'}] -%}"
        "{%- endif -%}\n"
        # the parts, in the composite order unless interleaved, then the suffix
        "{%- if lco_interleaved -%}"
        "{%- for kind, part in lco.typed -%}"
        "{%- set lco.parts = lco.parts + [part] -%}{%- endfor -%}"
        "{%- set lco.suffix = lco_suffixes['interleaved'] -%}"
        "{%- else -%}"
        "{%- for want in lco_order -%}{%- for kind, part in lco.typed if kind == want -%}"
        "{%- set lco.parts = lco.parts + [part] -%}{%- endfor -%}{%- endfor -%}"
        "{%- for kind, part in lco.typed if kind not in lco_order -%}"
        "{%- set lco.parts = lco.parts + [part] -%}{%- endfor -%}"
        "{%- set lco.suffix = lco_suffixes['text'] -%}"
        "{%- for want in lco_priority | reverse if want in lco.kinds -%}"
        "{%- set lco.suffix = lco_suffixes[want] -%}{%- endfor -%}"
        "{%- endif -%}\n"
        "{%- set lco.parts = lco.parts + [{'type': 'text', 'text': lco.suffix}] -%}\n"
        # the conversation without its system messages, the last user turn rebuilt
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'system' -%}"
        "{%- elif loop.index0 == lco.last -%}"
        "{%- set lco.messages = lco.messages "
        "+ [{'role': message['role'], 'content': lco.parts}] -%}"
        "{%- else -%}{%- set lco.messages = lco.messages + [message] -%}{%- endif -%}"
        "{%- endfor -%}\n"
        "{%- set messages = lco.messages -%}\n"
        "{%- endif -%}\n"
        "{%- set add_generation_prompt = true -%}\n"
    )
    return preamble + base


# --------------------------------------------------------------------------- checks


def _family(model: str | os.PathLike[str]) -> str:
    """The lcoemb family of a model, from its config alone (nothing is loaded)."""
    source = locate(model).backbone
    config = Path(source) / "config.json"
    if config.is_file():  # as load_backbone reads it: AutoConfig does not know lco_mini
        model_type = json.loads(config.read_text()).get("model_type", "")
    else:
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(source).model_type
    return backbone_class(model_type).family


def _check_family(family: str) -> None:
    if family in REFUSED_FAMILIES:
        raise ExportError(
            f"cannot export a {family} model to sentence-transformers: {REFUSED_FAMILIES[family]}"
        )
    if family not in EXPORTABLE_FAMILIES:
        raise ExportError(
            f"cannot export a {family} model to sentence-transformers: lcoemb does not know "
            "whether sentence-transformers can load this family (exportable: "
            f"{', '.join(sorted(EXPORTABLE_FAMILIES))})"
        )


def _check_backbone(backbone: Backbone) -> None:
    """Refuse a backbone whose checkpoint sentence-transformers would not run as lcoemb does."""
    _check_family(backbone.family)
    if not isinstance(backbone, HFChatBackbone):
        raise ExportError(
            f"cannot export {backbone.name_or_path!r}: its backbone is not a transformers "
            "checkpoint with a chat-template processor, which sentence-transformers needs"
        )
    own = [
        m for m in _PROMPT_METHODS if getattr(type(backbone), m) is not getattr(HFChatBackbone, m)
    ]
    if own:
        raise ExportError(
            f"cannot export {backbone.name_or_path!r}: {type(backbone).__name__} builds its "
            f"prompt its own way ({', '.join(own)}), which the exported chat template does not "
            "reproduce"
        )
    from transformers import AutoModel

    config = backbone.model.config
    inner = type(backbone.transformers_model.model)
    try:
        loaded = AutoModel._model_mapping[type(config)]
    except KeyError:
        loaded = None
    if loaded is not inner:
        what = "no class" if loaded is None else f"{loaded.__name__}"
        raise ExportError(
            f"cannot export {backbone.name_or_path!r}: transformers' AutoModel gives {what} for "
            f"model_type {config.model_type!r}, but lcoemb runs {inner.__name__}; "
            "sentence-transformers would load a different model"
        )
    if not _base_template(backbone.processor):
        raise ExportError(
            f"cannot export {backbone.name_or_path!r}: its processor has no chat template"
        )


def _base_template(processor: Any) -> str | None:
    template = processor.chat_template
    if isinstance(template, Mapping):  # several named templates: the default one renders
        template = template.get("default")
    return template


# --------------------------------------------------------------------------- writing


def _modality_config(backbone: Backbone) -> dict[str, dict[str, Any]]:
    """The Transformer module's modalities: the backbone's own, and ``message``, through which
    every input reaches the chat template (a composite dict too)."""
    entry = {"method": "forward", "method_output_name": "last_hidden_state"}
    config = {
        m: dict(entry) for m in ("text", "image", "audio", "video") if m in backbone.modalities
    }
    config["message"] = {**entry, "format": "structured"}
    return config


#: Families whose processors bound each video frame's pixels (``size``), as lcoemb passes it.
_VIDEO_SIZE_FAMILIES = frozenset({"qwen2_5_omni", "qwen2_5_vl", "qwen2_vl"})


def _processing_kwargs(backbone: Backbone) -> dict[str, Any]:
    """Processor kwargs sentence-transformers passes on every call: the generation prompt (the
    template forces it too) and the encoder's pixel caps, as lcoemb passes them."""
    import PIL.Image

    kwargs: dict[str, Any] = {"chat_template": {"add_generation_prompt": True}}
    if getattr(backbone, "max_image_pixels", None) is not None:
        # the backbone's own kwargs for an image: the cap's key differs between families
        probe = LoadedItem([("image", PIL.Image.new("RGB", (28, 28)))])
        images_kwargs = backbone._media_kwargs([probe]).get("images_kwargs")
        if images_kwargs:
            kwargs["image"] = images_kwargs
    video_pixels = getattr(backbone, "max_video_pixels", None)
    if video_pixels is not None:
        if backbone.family not in _VIDEO_SIZE_FAMILIES:
            raise ExportError(
                f"max_video_pixels={video_pixels} cannot be carried over for {backbone.family}: "
                "lcoemb resizes its frames itself; export a model loaded without it"
            )
        kwargs["video"] = {"size": backbone._capped_size("videos", video_pixels)}
    return kwargs


def _versions() -> dict[str, str]:
    versions = {}
    for name in ("sentence-transformers", "transformers"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name.replace("-", "_")] = metadata.version(name)
    versions["pytorch"] = torch.__version__
    return versions


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")


def _write_modules(out: Path, backbone: Backbone, processing_kwargs: dict[str, Any]) -> None:
    """modules.json and the three modules' configs, as sentence-transformers 6 saves them."""
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": _TRANSFORMER},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": _POOLING},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": _NORMALIZE},
        ],
    )
    _write_json(
        out / "sentence_bert_config.json",
        {
            "transformer_task": "feature-extraction",
            "modality_config": _modality_config(backbone),
            "module_output_name": "token_embeddings",
            "processing_kwargs": processing_kwargs,
            # text-only batches must keep their padding: flattening them (flash attention) would
            # lose the multimodal rotary positions Qwen-style models compute from the batch
            "unpad_inputs": False,
        },
    )
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "embedding_dimension": backbone.hidden_size,
            "pooling_mode": "lasttoken",
            "include_prompt": True,
        },
    )
    _write_json(
        out / "2_Normalize" / "config.json",
        {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"},
    )
    _write_json(
        out / "config_sentence_transformers.json",
        {
            "__version__": _versions(),
            "model_type": "SentenceTransformer",
            "prompts": {"query": "", "document": ""},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )


def _save_checkpoint(encoder: OmniEncoder, out: Path, template: str) -> None:
    """Merge and save the encoder with ``template`` as its chat template (only in the folder:
    the encoder's processor keeps its own)."""
    processor = encoder.backbone.processor
    tokenizer = processor.tokenizer
    saved = processor.chat_template, tokenizer.chat_template
    processor.chat_template = template
    if tokenizer.chat_template is not None:
        tokenizer.chat_template = template
    try:
        encoder.save_pretrained(out)  # merges a loaded adapter (merge_and_unload)
    finally:
        processor.chat_template, tokenizer.chat_template = saved
    # transformers 5 reads one template source: a legacy chat_template.json beside
    # chat_template.jinja (or additional_chat_templates/) is an error or a silent shadow
    stale = [p for p in ("chat_template.json", "additional_chat_templates") if (out / p).exists()]
    if stale or not (out / "chat_template.jinja").is_file():
        raise ExportError(
            f"{out}: the processor wrote {stale or 'no chat_template.jinja'}; expected exactly "
            "one chat template, chat_template.jinja"
        )


# --------------------------------------------------------------------------- verification


def _probes(backbone: Backbone) -> dict[str, tuple[Any, Any]]:
    """One small generated input per modality the backbone has (video aside), as lcoemb and as
    sentence-transformers take it."""
    import PIL.Image

    probes: dict[str, tuple[Any, Any]] = {}
    text = "A red square slides across a blue background."
    probes["text"] = (text, text)
    if "image" in backbone.modalities:
        y, x = np.mgrid[0:56, 0:84]
        pixels = np.stack([x * 3, y * 4, (x + y) * 2], -1).astype(np.uint8)
        image = PIL.Image.fromarray(pixels, "RGB")
        probes["image"] = (image, image)
    if "audio" in backbone.modalities:
        t = np.arange(TARGET_SAMPLING_RATE) / TARGET_SAMPLING_RATE
        wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        st_audio = {"array": wave, "sampling_rate": TARGET_SAMPLING_RATE}
        probes["audio"] = (Audio(wave, sampling_rate=TARGET_SAMPLING_RATE), st_audio)
    return probes


def _cosines(expected: dict[str, np.ndarray], out: Path, probes: dict, device: Any) -> dict:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(os.fspath(out), device=str(device))
    got = {m: model.encode([st_input])[0] for m, (_, st_input) in probes.items()}
    return {m: float(np.dot(expected[m], got[m]) / np.linalg.norm(got[m])) for m in expected}


# --------------------------------------------------------------------------- the export


def export_sentence_transformers(
    model: str | os.PathLike[str] | OmniEncoder,
    output: str | os.PathLike[str],
    *,
    adapter: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | str | None = "auto",
    device: str | torch.device | None = "cpu",
    verify: bool = True,
    min_cosine: float = MIN_COSINE,
) -> Path:
    """Write ``output``, a folder ``sentence_transformers.SentenceTransformer`` loads and whose
    ``encode`` gives this model's lcoemb vectors (text, images, audio where the family has it).

    ``model`` is anything :meth:`OmniEncoder.from_pretrained` loads (with ``adapter``, ``dtype``
    and ``device``; ``dtype`` defaults to the checkpoint's own, so merging keeps its precision),
    or a loaded :class:`~lcoemb.OmniEncoder`, whose adapter is then merged in place as
    :meth:`~lcoemb.OmniEncoder.save_pretrained` does. ``output`` must be new or empty.

    With ``verify`` the folder is loaded with sentence-transformers and a generated text, image
    and audio clip (those the family has) are encoded both ways; a cosine under ``min_cosine``
    removes the folder and raises. Returns the folder.

    Raises :class:`ExportError`, before anything is loaded or written, for a family in
    :data:`REFUSED_FAMILIES` (LCO-Mini, not a transformers checkpoint; LLaVA-NeXT, whose prompt
    lcoemb builds its own way) or one not in :data:`EXPORTABLE_FAMILIES`.
    """
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder; export into a new one")
    if isinstance(model, OmniEncoder):
        if adapter is not None:
            raise ValueError("give adapter= only with a model path; load it into the encoder first")
        encoder, owned = model, False
    else:
        _check_family(_family(model))
        encoder = OmniEncoder.from_pretrained(model, adapter=adapter, device=device, dtype=dtype)
        owned = True
    backbone = encoder.backbone
    _check_backbone(backbone)
    processing_kwargs = _processing_kwargs(backbone)
    template = lco_chat_template(_base_template(backbone.processor) or "", backbone.suffixes)

    out.mkdir(parents=True, exist_ok=True)
    try:
        _save_checkpoint(encoder, out, template)
        _write_modules(out, backbone, processing_kwargs)
        if verify:
            probes = _probes(backbone)
            run_on = encoder.device
            # the encoder now holds the merged weights, exactly what the folder holds
            expected = {m: encoder.encode([item])[0] for m, (item, _) in probes.items()}
            if owned:  # free it before sentence-transformers loads a second copy
                del encoder, backbone
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            cosines = _cosines(expected, out, probes, run_on)
            bad = {m: c for m, c in cosines.items() if not c >= min_cosine}
            if bad:
                raise ExportError(
                    "the exported folder does not reproduce lcoemb's vectors (cosine "
                    + ", ".join(f"{m} {c:.6f}" for m, c in bad.items())
                    + f" < {min_cosine}); it was removed"
                )
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out
