"""``lcoemb serve``: an OpenAI-compatible embeddings server with dynamic batching.

Its settings, :class:`~lcoemb.config.ServeConfig`, live with the other commands' settings in
:mod:`lcoemb.config` and are re-exported here, beside the functions that take them.
"""

from lcoemb.config import ServeConfig
from lcoemb.serving.app import create_app, serve

__all__ = ["ServeConfig", "create_app", "serve"]
