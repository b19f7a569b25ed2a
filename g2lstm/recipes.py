"""Named gate recipes: one word for the G2 options that a measurement stands behind.

``G2LSTM.from_recipe('binary', 10, 20)`` in Python, ``recipe=binary`` on any trainer's command
line (``g2lstm/conf/<task>/recipe/<name>.yaml``, checked against this table by the tests).

``binary``: noise on every stochastic gate element in every step (``noise_p=1``) at temperature
0.5. The paper's ``p = 0.2`` (the package's default) leaves the gates about as soft as an LSTM's
(results/binarization); with this recipe at least half of the input and forget gate values of
every layer end below 0.1 or above 0.9. What it cost, trained to convergence with 2 seeds
(results/binarization/convergence.md): nothing on the transliterator (97.64 % word accuracy
against the LSTM's 97.65 %), where it also makes the gate weights robust to round & clip and SVD;
on the small Bible LM +17.8% perplexity from scratch and +5.3% as a finetune of a converged LSTM
(``train.init_from``; ``noise_p=0.5`` instead: +4.3%), while rank-k SVD of its gate blocks costs it
0.8 perplexity against the LSTM's 16. No setting binarized the LM within 2% of the LSTM; exactly
binary gates cost it +12.4% at best (straight-through, ``train_gates='hard'``, as a finetune of the
LSTM). Multi30k has not been run to convergence.

``hard``: exactly binary input and forget gates, in training as at inference: ``a >= 0`` in the
forward pass with the gradient of ``sigmoid(a)`` (straight-through, ``train_gates='hard'``) and
``eval_gates='hard'``. Measured as a finetune of a converged LSTM (``train.init_from``), 2 seeds:
+12.4% perplexity on the small Bible LM, the cheapest exactly binary LM measured, against +16.9%
for hard gates set after a ``binary`` finetune; its weights stay near the LSTM's, so it is no more
robust to compressing them than the LSTM. A hard-gated model has no ``nn.LSTM`` equivalent
(``to_lstm`` refuses it).
"""

from __future__ import annotations

from types import MappingProxyType

# name -> G2LSTM keyword arguments (and the trainers' model.cell / model.<key> of the same meaning)
RECIPES = MappingProxyType({
    "binary": MappingProxyType({"gates": "gumbel", "noise_p": 1.0, "tau": 0.5}),
    "hard": MappingProxyType({"gates": "gumbel", "noise_p": 0.0, "tau": 1.0, "train_gates": "hard",
                              "eval_gates": "hard"}),
})


def recipe_options(name: str) -> dict:
    """The G2 keyword arguments of recipe ``name``; ``ValueError`` naming the known ones if unknown."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    return dict(RECIPES[name])
