"""Text-only LoRA contrastive training: triplet data, losses, the trainer, merging and soups.

The data layer is re-exported here; the other modules are imported from their own paths.
"""

from lcoemb.training.data import (
    DataError,
    ImageRef,
    Triplet,
    TripletDataset,
    TripletSet,
    collate_triplets,
    load_triplets,
    mix_sources,
    parse_mix_arg,
)

__all__ = [
    "DataError",
    "ImageRef",
    "Triplet",
    "TripletDataset",
    "TripletSet",
    "collate_triplets",
    "load_triplets",
    "mix_sources",
    "parse_mix_arg",
]
