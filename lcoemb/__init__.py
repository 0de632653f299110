"""lcoemb: language-centric omnimodal embeddings (LCO-EMB).

Turn a multimodal LLM into one embedding model for text, images, audio, video and interleaved
inputs, by LoRA contrastive training on text alone.
"""

from lcoemb.encoder import OmniEncoder
from lcoemb.inputs import Audio, InputError, Limits, Video

__version__ = "0.1.0"

__all__ = ["Audio", "InputError", "Limits", "OmniEncoder", "Video", "__version__"]
