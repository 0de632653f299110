"""LCO-Mini's language model is converted from its GGUF once and then read from lcoemb's cache:
the same weights and tokenizer to the bit, a damaged entry converted again, and a cache that
cannot be written costing only the speed."""

import os
import time

import pytest
import torch
import transformers.modeling_gguf_pytorch_utils as gguf_utils
from transformers import AutoModelForCausalLM, AutoTokenizer

from lcoemb.cache import STALE_STAGING_S, cache_entry
from lcoemb.mini.model import converted_smollm2_dir, gguf_path, load_smollm2


def test_a_cache_entry_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError), cache_entry(final) as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("the build failed")
    assert list(tmp_path.iterdir()) == []  # nothing published, no staging left
    with cache_entry(final) as first:
        (first / "a").write_text("first")
        with cache_entry(final) as second:  # another build of the same entry, finished first
            assert second != first
            (second / "a").write_text("second")
    assert (final / "a").read_text() == "second"  # the first complete copy stays
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]
    # a killed build's staging folder goes once it is old; a running build's stays
    stale, running = tmp_path / ".other.tmp-dead", tmp_path / ".other.tmp-live"
    stale.mkdir(), running.mkdir()
    old = time.time() - STALE_STAGING_S - 60
    os.utime(stale, (old, old))
    with cache_entry(tmp_path / "other") as tmp:
        (tmp / "a").write_text("built")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-live", "entry", "other"]


def _same_weights(lm: torch.nn.Module, reference: dict[str, torch.Tensor]) -> bool:
    state = lm.state_dict()
    return state.keys() == reference.keys() and all(
        torch.equal(state[k].to(reference[k].dtype), reference[k]) for k in reference
    )


def _same_tokenizer(tokenizer, reference) -> bool:
    chat = [{"role": "user", "content": "a red circle\nSummarize the above text in one word:"}]
    texts = ["a red circle", "<|im_start|>user\nhi<|im_end|>", "ünïcödé 日本 🙂", ""]
    return (
        type(tokenizer) is type(reference)
        and tokenizer.padding_side == "left"
        and tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        == reference.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        and all(tokenizer(t)["input_ids"] == reference(t)["input_ids"] for t in texts)
        and (tokenizer.eos_token, tokenizer.pad_token) == (reference.eos_token, reference.pad_token)
    )


@pytest.mark.slow
def test_smollm2_is_converted_once_and_reads_back_the_ggufs_weights(tmp_path, monkeypatch):
    path = gguf_path()
    direct = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.bfloat16
    )
    reference = direct.state_dict()
    del direct

    # a cache that cannot be written: a warning, and the model all the same
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("LCOEMB_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="could not cache"):
        lm, gguf_tokenizer = load_smollm2(torch.bfloat16)
    assert _same_weights(lm, reference)

    # the first load converts; the entry holds the weights, the tokenizer and its mark
    monkeypatch.setenv("LCOEMB_CACHE", str(tmp_path / "cache"))
    lm, tokenizer = load_smollm2(torch.bfloat16)
    folder = converted_smollm2_dir()
    assert folder.parent == tmp_path / "cache" / "smollm2"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging left
    assert (folder / "lcoemb-converted.json").is_file()
    assert _same_weights(lm, reference) and _same_tokenizer(tokenizer, gguf_tokenizer)

    # later loads read the folder, never the GGUF, in any dtype
    def no_gguf(*args, **kwargs):
        raise AssertionError("the GGUF was read again")

    with monkeypatch.context() as patch:
        patch.setattr(gguf_utils, "load_gguf_checkpoint", no_gguf)
        lm, tokenizer = load_smollm2(torch.bfloat16)
        assert _same_weights(lm, reference) and _same_tokenizer(tokenizer, gguf_tokenizer)
        lm32, _ = load_smollm2()
        assert {p.dtype for p in lm32.parameters()} == {torch.float32}
        assert _same_weights(lm32, reference)
        assert AutoTokenizer.from_pretrained(folder).name_or_path == str(folder)

    # a damaged entry (a truncated weights file) is converted again, with a warning
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="damaged"):
        lm, _ = load_smollm2(torch.bfloat16)
    assert _same_weights(lm, reference)
    assert weights.stat().st_size > 100_000_000
