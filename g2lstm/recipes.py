"""Named gate recipes: one word for the G2 options that a measurement stands behind.

``G2LSTM.from_recipe('binary', 10, 20)`` in Python, ``recipe=binary`` on any trainer's command
line (``g2lstm/conf/<task>/recipe/<name>.yaml``, checked against this table by the tests).

``binary``: noise on every stochastic gate element in every step (``noise_p=1``) at temperature
0.5. The paper's ``p = 0.2`` (the package's default) leaves the gates about as soft as an LSTM's
at the budgets measured here (results/binarization); with this recipe at least half of the input
and forget gate values of every layer end below 0.1 or above 0.9 on the transliterator and the
small Bible LM. What it cost, as measured there (short budgets, not converged): nothing measurable
on the transliterator, +10.2 perplexity on the LM from scratch and +6.7 as a finetune of a
``p = 0.2`` model (``train.init_from``); it did not binarize the Multi30k translator or the
sentiment classifier in the runs tried.
"""

from __future__ import annotations

from types import MappingProxyType

# name -> G2LSTM keyword arguments (and the trainers' model.cell / model.<key> of the same meaning)
RECIPES = MappingProxyType({
    "binary": MappingProxyType({"gates": "gumbel", "noise_p": 1.0, "tau": 0.5}),
})


def recipe_options(name: str) -> dict:
    """The G2 keyword arguments of recipe ``name``; ``ValueError`` naming the known ones if unknown."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    return dict(RECIPES[name])
