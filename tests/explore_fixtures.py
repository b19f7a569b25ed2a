"""Tiny models and pages of every task for the explorer's tests (trained for a few steps, or untrained)."""

import numpy as np
import torch

from g2lstm.classify.model import ClassifierConfig, RNNClassifier
from g2lstm.classify.task import ClassificationTask
from g2lstm.data.sentiment import tokenize
from g2lstm.data.symbols import SymbolTable
from test_interpret_models import LM_TEXTS, tiny_lm

# Unusual texts the page must render: Cyrillic, umlauts, an HTML end tag that would end a script.
ODD_TEXTS = ["Привет, мир: щука и ёж", "Grüße aus München, schöne Äpfel", "a </script><b>bold</b> test & more",
             "the dog runs ."]

# Translit runs: Obadiah to train, Jonah to validate, Philemon to test (as tests/test_translit_train.py).
TRANSLIT = ["data.train_books=[31]", "data.valid_books=[32]", "data.test_books=[57]", "model.embed_dim=8",
            "model.hidden_dim=8", "train.batch_size=16", "train.log_every=2", "train.max_steps=3", "threads=1",
            "train.eval_every=0", "train.saturation_every=1"]


def lm_pair():
    """Two tiny LMs with different weights (so that B - A is not zero)."""
    a, b = tiny_lm("lstm"), tiny_lm("g2lstm")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in b.model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return {"lstm": a, "g2": b}


def lm_texts():
    """Nine texts of the tiny LM's words, varied enough that units separate 'the' before 'dog' from
    'the' before 'cat' to different degrees (the Hellinger search has something to rank)."""
    return LM_TEXTS + ["the dog sleeps and a cat runs .", "a dog runs and the cat sleeps", "the cat sleeps .",
                       "a cat runs and the dog runs and the cat sleeps .", "the dog and the cat .",
                       "the cat and a dog sleeps and the dog runs ."]


def tiny_classifier(cell: str, seed: int) -> ClassificationTask:
    torch.manual_seed(seed)
    table = SymbolTable.build(tokenize(t) for t in ODD_TEXTS)
    model = RNNClassifier(ClassifierConfig(len(table), 2, cell=cell, embed_dim=8, hidden_dim=6, dropout=0.0))
    return ClassificationTask(model, table, {"model": {"cell": cell}}, f"classifier_{cell}.pt", "cpu")


def reference_information(loaded, texts, count: int, key: str, batch_size: int = 16, **options) -> list[np.ndarray]:
    """Per text of the first ``count``, ``sigma`` per token of layer ``key`` straight from
    ``word_information`` on ``batch_size`` texts at a time, with ``sigma_f`` the spread over all
    ``texts`` of each text's mean hidden state, as the page should hold it."""
    from g2lstm.interpret.phi import layer_phi
    from g2lstm.interpret.states import collect_states
    from g2lstm.interpret.word_information import word_information

    layer = collect_states(loaded, texts)[key]
    sigma_f = np.std([h.mean(0) for h in layer.values["h"]], axis=0)
    sigmas = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny forward-backward passes: a second thread only waits on the first
    try:
        for start in range(0, count, batch_size):
            batch = loaded.encode(texts[start:min(start + batch_size, count)])
            phi, x = layer_phi(loaded.model, batch, layer.side, layer)
            lengths = [len(t) for t in batch.tokens[layer.side]]
            mask = torch.arange(x.shape[1])[None] < torch.tensor(lengths)[:, None]
            sigma = word_information(phi, x, sigma_f, mask, **options).sigma.detach().double().numpy()
            sigmas += [sigma[n, :length] for n, length in enumerate(lengths)]
    finally:
        torch.set_num_threads(threads)
    return sigmas


def dequantised_tracks(header, arrays, model: int, key: str, field: str) -> list[np.ndarray]:
    """Per tracked text, the ``(steps, units)`` values the page reads (as it computes them)."""
    from g2lstm.explore.pack import dequantise

    m = header["models"][model]
    layer = next(x for x in m["layers"] if x["key"] == key)
    spec = layer["tracks"][field]
    values = dequantise(arrays[spec["array"]], spec["lo"], spec["hi"], spec["levels"])
    offsets = m["track_offsets"][layer["side"]]
    return [values[offsets[j]:offsets[j + 1]] for j in range(len(header["tracked"]))]
