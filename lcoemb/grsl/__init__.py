"""The Generation-Representation Scaling Law: fitting it across backbones (with bootstrap
intervals over seeds), and its bound.

Measuring both axes on backbones is a recipe: :mod:`lcoemb.recipes.grsl`.
"""

from lcoemb.grsl.fit import fit_file, fit_law, read_scores
from lcoemb.grsl.pacbayes import (
    binary_kl,
    gaussian_kl,
    kl_inverse,
    lora_gaussian_kl,
    pac_bayes_bound,
    representation_ceiling,
    retrieval_error_certificate,
)

__all__ = [
    "binary_kl",
    "fit_file",
    "fit_law",
    "gaussian_kl",
    "kl_inverse",
    "lora_gaussian_kl",
    "pac_bayes_bound",
    "read_scores",
    "representation_ceiling",
    "retrieval_error_certificate",
]
