"""Losses: pure tensor functions, each citing its paper and tested against hand-computed numbers.

Importing this subpackage imports torch (the top-level `alignkit` package does not).
"""

# Only `preference` exists so far; `logprobs` and `nll` (being written separately) get re-exported
# here once they land. Import submodules directly (`alignkit.losses.preference`) for anything else.
from alignkit.losses.preference import (
    LOSS_TYPES,
    REFERENCE_FREE,
    PreferenceLossOutput,
    dpo_sigmoid,
    hinge,
    ipo,
    log1mexp,
    orpo,
    preference_loss,
    robust_dpo,
    simpo,
)

__all__ = [
    "LOSS_TYPES",
    "REFERENCE_FREE",
    "PreferenceLossOutput",
    "dpo_sigmoid",
    "hinge",
    "ipo",
    "log1mexp",
    "orpo",
    "preference_loss",
    "robust_dpo",
    "simpo",
]
