"""Tiny Qwen3-Omni-MoE checkpoints: the thinker alone, and the full model (thinker, talker and
code2wav) in the layout of ``Qwen/Qwen3-Omni-30B-A3B-Instruct``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3OmniMoeConfig,
    Qwen3OmniMoeForConditionalGeneration,
    Qwen3OmniMoeProcessor,
    Qwen3OmniMoeThinkerConfig,
    Qwen3OmniMoeThinkerForConditionalGeneration,
)

from lcoemb.testing._build import (
    Family,
    check_sizes,
    image_processor_kwargs,
    spread_weights,
    vocab_size,
    whisper_feature_extractor,
    with_spread_experts,
    write_checkpoint,
)
from lcoemb.testing.qwen3_vl import mrope_section

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, ProcessorMixin

__all__ = ["OMNI3", "make_tiny_qwen3_omni", "make_tiny_qwen3_omni_thinker"]

OMNI3 = Family(
    special_tokens=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<|audio_start|>",
        "<|audio_end|>",
        "<|audio_pad|>",
        "<tts_pad>",
        "<tts_text_bos>",
        "<tts_text_eod>",
    ),
    named_tokens={
        "image_token": "<|image_pad|>",
        "audio_token": "<|audio_pad|>",
        "video_token": "<|video_pad|>",
        "vision_bos_token": "<|vision_start|>",
        "vision_eos_token": "<|vision_end|>",
        "audio_bos_token": "<|audio_start|>",
        "audio_eos_token": "<|audio_end|>",
    },
    # Qwen3-Omni's template adds no system turn of its own (unlike Qwen2.5-Omni's)
    default_system_prompt="",
    media_placeholders={
        "image": "<|vision_start|><|image_pad|><|vision_end|>",
        "audio": "<|audio_start|><|audio_pad|><|audio_end|>",
        "video": "<|vision_start|><|video_pad|><|vision_end|>",
    },
)

#: The shipped Qwen3-Omni template, reduced to what a prompt without tools or reasoning uses:
#: no default system turn, each medium as its placeholder block (matched by ``type`` or by its
#: own key), ``<|im_end|>`` after every message and ``<|im_start|>assistant`` as the prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{{- '<|audio_start|><|audio_pad|><|audio_end|>' }}"
    "{%- elif content['type'] == 'video' or 'video' in content %}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in content %}{{- content['text'] }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# The shipped Qwen3-Omni image processor (preprocessor_config): Qwen2VLImageProcessor with 16 px
# patches, 2x2 merge and Qwen2.5's pixel bounds (see image_processor_kwargs).
_PATCH = 16


def make_tiny_qwen3_omni_thinker(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    moe_intermediate_size: int = 64,
    num_experts: int = 4,
    num_experts_per_tok: int = 2,
    vision_depth: int = 2,
    audio_layers: int = 1,
    seed: int = 0,
    max_pixels: int | None = None,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.2,
) -> Path:
    """Write a tiny random Qwen3-Omni-MoE *thinker* checkpoint folder and return its path.

    The folder loads offline with ``Qwen3OmniMoeThinkerForConditionalGeneration`` and
    ``Qwen3OmniMoeProcessor`` (``model_type`` ``qwen3_omni_moe_thinker``). Every text layer is
    a sparse MoE (``num_experts`` experts, ``num_experts_per_tok`` routed per token) with
    Qwen3's q/k norms and interleaved M-RoPE; the vision tower (16 px patches, learned position
    grid) feeds deepstack features from its first block into the first text layer; the audio
    tower is Qwen3-Omni's chunked conv + windowed-attention encoder over 128 mel bins. Towers
    reuse ``hidden_size``/``num_attention_heads``. ``max_pixels`` caps the pixels per image and
    per frame; without it Qwen3-Omni's bounds are saved. Equal arguments give identical files.
    """
    head_dim = check_sizes(hidden_size, num_attention_heads, num_key_value_heads)

    def build_config(tokenizer: Qwen2Tokenizer) -> PreTrainedConfig:
        ids = tokenizer.convert_tokens_to_ids
        return Qwen3OmniMoeThinkerConfig(
            text_config={
                "vocab_size": vocab_size(tokenizer),
                "hidden_size": hidden_size,
                "intermediate_size": 2 * moe_intermediate_size,
                "moe_intermediate_size": moe_intermediate_size,
                "num_experts": num_experts,
                "num_experts_per_tok": num_experts_per_tok,
                "num_hidden_layers": num_hidden_layers,
                "num_attention_heads": num_attention_heads,
                "num_key_value_heads": num_key_value_heads,
                "max_position_embeddings": 65536,
                "rms_norm_eps": 1e-6,
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": 1_000_000.0,
                    "mrope_section": mrope_section(head_dim),
                    "interleaved": True,
                    "mrope_interleaved": True,
                },
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": ids("<|im_end|>"),
            },
            vision_config={
                "depth": vision_depth,
                "hidden_size": hidden_size,
                "intermediate_size": 2 * hidden_size,
                "num_heads": num_attention_heads,
                "patch_size": _PATCH,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "out_hidden_size": hidden_size,
                "num_position_embeddings": 64,  # an 8x8 learned grid, resampled per image
                "deepstack_visual_indexes": [0],
            },
            audio_config={
                "num_mel_bins": 128,
                "encoder_layers": audio_layers,
                "encoder_attention_heads": num_attention_heads,
                "encoder_ffn_dim": 2 * hidden_size,
                "d_model": hidden_size,
                "output_dim": hidden_size,
                "downsample_hidden_size": 16,
                "n_window": 50,
                "n_window_infer": 800,
            },
            audio_token_id=ids("<|audio_pad|>"),
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            audio_start_token_id=ids("<|audio_start|>"),
            # read by get_rope_index but not a declared field of the thinker config
            vision_start_token_id=ids("<|vision_start|>"),
            user_token_id=tokenizer.encode("user", add_special_tokens=False)[0],
            position_id_per_seconds=13,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=ids("<|im_end|>"),
        )

    def build_processor(tokenizer: Qwen2Tokenizer, _shared_template: str) -> ProcessorMixin:
        tokenizer.chat_template = CHAT_TEMPLATE
        # the video processor gets the same geometry and bounds
        pixels = image_processor_kwargs(max_pixels, patch_size=_PATCH)
        return Qwen3OmniMoeProcessor(
            image_processor=Qwen2VLImageProcessor(**pixels),
            video_processor=Qwen2VLVideoProcessor(**pixels),
            feature_extractor=whisper_feature_extractor(dither=0.0),
            tokenizer=tokenizer,
            chat_template=CHAT_TEMPLATE,
        )

    return write_checkpoint(
        path,
        family=OMNI3,
        build_config=build_config,
        model_class=with_spread_experts(Qwen3OmniMoeThinkerForConditionalGeneration, init_std),
        build_processor=build_processor,
        seed=seed,
        dtype=dtype,
        init_std=init_std,
    )


def make_tiny_qwen3_omni(
    path: str | Path,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.2,
    **thinker_kwargs: Any,
) -> Path:
    """Write a tiny random *full* Qwen3-Omni-MoE checkpoint (``model_type`` ``qwen3_omni_moe``:
    thinker, talker and code2wav, keys ``thinker.*``, ``talker.*``, ``code2wav.*``) and return
    its path.

    Its thinker is exactly :func:`make_tiny_qwen3_omni_thinker`'s for the same ``seed`` and
    ``thinker_kwargs``, so a model that loads only the thinker from this folder must give the
    thinker folder's vectors. The talker and code2wav are small random stand-ins.
    """
    out = make_tiny_qwen3_omni_thinker(
        path, seed=seed, dtype=dtype, init_std=init_std, **thinker_kwargs
    )
    thinker = Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(out, dtype=dtype)
    text = thinker.config.text_config
    ids = Qwen2Tokenizer.from_pretrained(out).convert_tokens_to_ids
    talker_text = {
        "vocab_size": 64,
        "hidden_size": 32,
        "intermediate_size": 64,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
        "num_experts": 2,
        "num_experts_per_tok": 1,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": [4, 2, 2],
            "interleaved": True,
        },
    }
    config = Qwen3OmniMoeConfig(
        thinker_config=thinker.config.to_dict(),
        talker_config={
            "text_config": talker_text,
            "code_predictor_config": {
                "vocab_size": 64,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "head_dim": 16,
                "num_code_groups": 4,
            },
            "num_code_groups": 4,
            "thinker_hidden_size": text.hidden_size,
            "accept_hidden_layer": text.num_hidden_layers - 1,
            "codec_eos_token_id": 60,
            "codec_nothink_id": 61,
            "codec_think_bos_id": 62,
            "codec_think_eos_id": 63,
            "codec_pad_id": 58,
            "codec_bos_id": 59,
            "audio_token_id": thinker.config.audio_token_id,
            "image_token_id": thinker.config.image_token_id,
            "video_token_id": thinker.config.video_token_id,
            "vision_start_token_id": ids("<|vision_start|>"),
            "audio_start_token_id": thinker.config.audio_start_token_id,
            "speaker_id": {"ethan": 57},
            "spatial_merge_size": 2,
        },
        code2wav_config={
            "codebook_size": 64,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "num_quantizers": 4,
            "upsample_rates": [2, 2],
            "upsampling_ratios": [2],
            "decoder_dim": 32,
            "sliding_window": 8,
        },
        im_start_token_id=ids("<|im_start|>"),
        im_end_token_id=ids("<|im_end|>"),
        tts_pad_token_id=ids("<tts_pad>"),
        tts_bos_token_id=ids("<tts_text_bos>"),
        tts_eos_token_id=ids("<tts_text_eod>"),
        user_token_id=thinker.config.user_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        full = Qwen3OmniMoeForConditionalGeneration(config)
        spread_weights(full.talker, init_std)
        spread_weights(full.code2wav, init_std)
    full.thinker.load_state_dict(thinker.state_dict())
    full = full.to(dtype).eval()
    full.config.dtype = dtype
    full.generation_config = thinker.generation_config
    for stale in out.glob("model*.safetensors*"):
        stale.unlink()
    full.save_pretrained(out)
    return out
