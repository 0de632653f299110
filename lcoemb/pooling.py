"""How hidden states become an embedding: last-token pooling and L2 normalisation.

LCO-EMB's vector of an item is the hidden state of the last real token of its prompt (the token
after "...in one word:"), L2-normalised. This module is the one place that says so:

* :func:`last_token_positions` picks, for each row of a batch, the position to pool;
* :func:`at_positions` takes each row's state at its position;
* :class:`HiddenStates` is what a backbone's forward pass returns (states and positions), and
  :func:`last_token` pools it;
* :func:`normalize` turns pooled states into unit vectors.

Backbones (:mod:`lcoemb.backbones`) run the forward pass and call :func:`last_token_positions`;
the inference fast path (:mod:`lcoemb.backbones.fastpath`) uses it and :func:`at_positions` to
compute only the pooled rows in its last layer. :class:`~lcoemb.encoder.OmniEncoder` calls
:func:`last_token` and :func:`normalize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["HiddenStates", "at_positions", "last_token", "last_token_positions", "normalize"]


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """The index of each row's last real token: ``(B, n)`` mask -> ``(B,)`` long. With left
    padding (every backbone's) that is ``n - 1`` for every row."""
    n = attention_mask.shape[-1]
    index = torch.arange(n, device=attention_mask.device)
    return (index * attention_mask.bool()).amax(-1)


def at_positions(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Each row's state at its position: ``(B, n, ...)`` and ``(B,)`` -> ``(B, ...)``."""
    return states[torch.arange(len(positions), device=states.device), positions]


@dataclass(frozen=True)
class HiddenStates:
    """What a backbone's forward pass gives: hidden states and, per row, the position to pool.

    ``states`` is the final layer's ``(B, n, d)`` (after the final norm), or with all layers a
    tuple of ``num_layers + 1`` such tensors: the embedding output, then every layer. A pass
    that computes only the pooled rows (the fast path) gives them as ``(B, 1, d)`` with every
    position 0.
    """

    states: torch.Tensor | tuple[torch.Tensor, ...]
    positions: torch.Tensor


def last_token(hidden: HiddenStates) -> torch.Tensor:
    """Pool ``hidden``: ``(B, d)`` from the final layer, or ``(num_layers + 1, B, d)`` when it
    holds every layer. States keep the model's dtype and stay differentiable."""
    if isinstance(hidden.states, torch.Tensor):
        return at_positions(hidden.states, hidden.positions)
    return torch.stack([at_positions(h, hidden.positions) for h in hidden.states])


def normalize(states: torch.Tensor, dimensions: int | None = None) -> torch.Tensor:
    """Float32 unit vectors from pooled states ``(..., d)``, keeping the first ``dimensions``
    components (a Matryoshka-trained model's shorter vectors; all of them for ``None``).

    The states are normalised in their own dtype first, as the reference does (its directions),
    then cut and normalised again in float32, since bf16 rounding leaves norms up to 3e-3 off 1.
    """
    states = F.normalize(states, p=2, dim=-1)
    return F.normalize(states.float()[..., :dimensions], p=2, dim=-1)
