"""Interpretability methods for any recurrent model of the package (see docs/interpret.md).

Model-free cores, each testable on its own:

- :func:`integrated_gradients`: token attributions whose sum is the logit's change (Captum).
- :func:`word_information`: how much of each word a hidden state keeps (Guan et al. 2019).
- :func:`expected_response`, :func:`co_cluster`: what units respond to, words x units
  co-clusters (RNNVis, Ming et al. 2017).
- :func:`hellinger`, :func:`rank_neurons`: neurons whose activations separate two groups of
  steps, with a permutation null.

Model level, for a ``g2lstm.load`` result: :func:`token_attributions` (IG of a logit per text),
:func:`collect_states` (every layer's states and gates over texts, via ``g2lstm.trace``); the
report's sections are in :mod:`.sections`. Views over arrays (:mod:`.views`): word clouds per word
cluster, memory chips, text coloured by a unit's activations (PNG).
"""

from .attribution import TokenAttribution, token_attributions
from .ig import integrated_gradients, require_soft_gates
from .neurons import NeuronScore, hellinger, rank_neurons
from .rnnvis import co_cluster, expected_response
from .states import LayerStates, collect_states
from .views import (
    ColoredText, activation_png, cluster_means, plot_memory_chips, plot_word_clouds,
)
from .word_information import WordInformation, feature_scale, word_information

__all__ = [
    "ColoredText",
    "LayerStates",
    "NeuronScore",
    "TokenAttribution",
    "WordInformation",
    "activation_png",
    "cluster_means",
    "co_cluster",
    "collect_states",
    "expected_response",
    "feature_scale",
    "hellinger",
    "integrated_gradients",
    "plot_memory_chips",
    "plot_word_clouds",
    "rank_neurons",
    "require_soft_gates",
    "token_attributions",
    "word_information",
]
