"""``lcoemb serve``: an OpenAI-compatible embeddings server with dynamic batching."""

from lcoemb.serving.app import ServeConfig, create_app, serve

__all__ = ["ServeConfig", "create_app", "serve"]
