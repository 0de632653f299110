"""LCO-Mini: a small multimodal LLM built offline, with its generated data and benchmark."""
