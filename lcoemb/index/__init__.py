"""Index and search a collection: walk files, embed them, store the vectors in Parquet shards,
search them with FAISS, and keep the index up to date as files change (``lcoemb index``)."""

from lcoemb.index.index import BuildSummary, Hit, Index, IndexSettingsError

__all__ = ["BuildSummary", "Hit", "Index", "IndexSettingsError"]
