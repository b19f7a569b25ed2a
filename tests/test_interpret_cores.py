"""g2lstm.interpret model-free cores against known answers."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from torch import nn

from g2lstm import G2LSTM
from g2lstm.interpret import (
    co_cluster, expected_response, hellinger, integrated_gradients, rank_neurons, require_soft_gates,
    word_information,
)

# --- Integrated Gradients -----------------------------------------------------------------


def test_ig_two_relu_known_answer():
    def forward(x):
        return torch.relu(torch.relu(x[:, 0]) - 1 - torch.relu(x[:, 1]))

    attributions, delta = integrated_gradients(forward, torch.tensor([[3.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(attributions, torch.tensor([[1.5, -0.5]], dtype=torch.float64), atol=1e-6, rtol=0)
    assert abs(delta.item()) < 1e-6


def test_ig_linear_map_is_exact():
    w = torch.tensor([2.0, -3.0, 0.5], dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 4.0]], dtype=torch.float64)
    baseline = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]], dtype=torch.float64)
    attributions, delta = integrated_gradients(lambda z: z @ w, x, baseline, n_steps=3)
    torch.testing.assert_close(attributions, w * (x - baseline))
    torch.testing.assert_close(delta, torch.zeros(2, dtype=torch.float64))


class Classifier(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 6)
        self.rnn = rnn
        self.out = nn.Linear(8, 3)

    def logits(self, embedded):
        output, _ = self.rnn(embedded)
        return self.out(output[:, -1])


@pytest.mark.parametrize("rnn", [nn.LSTM, G2LSTM])
def test_ig_completeness_embedding_lstm(rnn):
    model = Classifier(rnn(6, 8, batch_first=True)).double().eval()
    tokens = torch.randint(0, 20, (4, 7), generator=torch.Generator().manual_seed(1))
    embedded = model.embed(tokens).detach()
    attributions, delta = integrated_gradients(
        lambda e: model.logits(e)[:, 1], embedded, internal_batch_size=60
    )
    assert attributions.shape == embedded.shape
    assert delta.abs().max() < 1e-6
    assert attributions.abs().sum() > 0


def test_ig_rejects_a_forward_with_many_outputs():
    with pytest.raises(ValueError, match="one scalar per example"):
        integrated_gradients(lambda z: z, torch.ones(2, 3))


def test_hard_gates_are_refused():
    model = Classifier(G2LSTM(6, 8, batch_first=True, eval_gates="hard"))
    with pytest.raises(ValueError, match="eval_gates='hard'.*completeness"):
        require_soft_gates(model)
    require_soft_gates(Classifier(G2LSTM(6, 8, batch_first=True)))
    require_soft_gates(Classifier(nn.LSTM(6, 8, batch_first=True)))


# --- Per-word information -------------------------------------------------------------------

W = torch.tensor([10.0, 20.0, 5.0, -20.0, -10.0], dtype=torch.float64)


def linear_phi(x):
    return (W[: x.shape[1], None] * x).sum(-2)


def test_word_information_linear_closed_form():
    x = torch.randn(5, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma, entropy = word_information(linear_phi, x, sigma_f=2.0, lam=0.1, steps=200)
    expected = 2.0 * math.sqrt(0.1 / (2 * 5)) / W.abs()
    torch.testing.assert_close(sigma, expected, rtol=0.03, atol=0)
    torch.testing.assert_close(entropy, 256 / 2 * math.log(2 * math.pi * math.e) + 256 * sigma.log())
    assert set(entropy.argsort()[:2].tolist()) == {1, 3}  # words 2 and 4 matter most


def test_word_information_batch_with_mask_matches_single_sentences():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 64, dtype=torch.float64, generator=generator)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])

    def phi(e):  # one feature per position: a causal running sum weighted by W
        return torch.cumsum(W[: e.shape[1], None] * e, dim=1)

    batch = word_information(phi, x, sigma_f=1.0, mask=mask, steps=200)
    assert batch.sigma[1, 3:].isnan().all() and batch.entropy[1, 3:].isnan().all()
    for b, n in enumerate([5, 3]):
        single = word_information(phi, x[b, :n], sigma_f=1.0, steps=200, seed=1)
        torch.testing.assert_close(batch.sigma[b, :n], single.sigma, rtol=0.05, atol=0)


def test_word_information_ignores_constant_units():
    x = torch.randn(3, 5, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plain = word_information(linear_phi, x, steps=50)
    with_constant = word_information(lambda e: torch.cat([linear_phi(e), torch.ones(len(e), 4, dtype=e.dtype)], 1), x, steps=50)
    assert torch.isfinite(with_constant.sigma).all()
    torch.testing.assert_close(with_constant.sigma, plain.sigma)


def test_word_information_needs_a_spread_estimate():
    with pytest.raises(ValueError, match="at least 2 sentences"):
        word_information(linear_phi, torch.randn(5, 8, dtype=torch.float64), steps=1)
    with pytest.raises(ValueError, match="mask must have shape"):
        word_information(linear_phi, torch.randn(2, 5, 8), mask=torch.ones(2, 4, dtype=torch.bool), steps=1)


# --- RNNVis ---------------------------------------------------------------------------------


def test_expected_response_of_an_accumulator():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(10, 4))
    sequences = [rng.integers(0, 10, size=n) for n in (5, 9, 3)]
    states = [np.cumsum(embeddings[s], axis=0) for s in sequences]  # s_t = s_{t-1} + E[x_t]
    words, response = expected_response(states, sequences)
    np.testing.assert_allclose(response, embeddings[words], atol=1e-12)
    counts = np.bincount(np.concatenate(sequences), minlength=10)
    assert list(counts[words]) == sorted(counts[words], reverse=True)
    top, top_response = expected_response(states, sequences, top_k=3)
    np.testing.assert_array_equal(top, words[:3])
    assert top_response.shape == (3, 4)


def test_expected_response_checks_lengths():
    with pytest.raises(ValueError, match="T = 3 tokens"):
        expected_response([np.zeros((4, 2))], [[1, 2, 3]])


def test_co_cluster_recovers_planted_blocks_and_drops_empty_rows():
    rng = np.random.default_rng(0)
    row_truth, col_truth = np.repeat(np.arange(3), 8), np.repeat(np.arange(3), 5)
    matrix = np.where(row_truth[:, None] == col_truth[None, :], 1.0, 0.0) + 0.05 * rng.random((24, 15))
    rows, cols = rng.permutation(24), rng.permutation(15)
    matrix, row_truth, col_truth = matrix[rows][:, cols], row_truth[rows], col_truth[cols]
    matrix = np.vstack([matrix, -np.ones((1, 15))])  # no positive edges
    row_labels, col_labels = co_cluster(matrix, 3)
    assert row_labels[-1] == -1
    assert adjusted_rand_score(row_truth, row_labels[:-1]) == 1.0
    assert adjusted_rand_score(col_truth, col_labels) == 1.0
    negative_rows, negative_cols = co_cluster(-matrix[:-1], 3, mode="negative")
    assert adjusted_rand_score(row_labels[:-1], negative_rows) == 1.0
    np.testing.assert_array_equal(co_cluster(matrix[:-1], 3, mode="absolute")[1], col_labels)
    with pytest.raises(ValueError, match="mode must be one of"):
        co_cluster(matrix, 3, mode="both")


# --- Hellinger neuron ranking ---------------------------------------------------------------


def test_hellinger_known_values():
    rng = np.random.default_rng(0)
    assert hellinger([0.0, 1.0, 2.0], [0.0, 1.0, 2.0]) == 0.0
    assert hellinger([0.0, 0.1], [5.0, 5.1], bins=4) == 1.0
    assert hellinger([0.0, 1.0], [0.0, 0.0], bins=2) == pytest.approx(math.sqrt(1 - math.sqrt(0.5)))
    far = hellinger(rng.normal(0, 1, 20000), rng.normal(2, 1, 20000))
    assert far == pytest.approx(math.sqrt(1 - math.exp(-0.5)), abs=0.01)


def test_hellinger_auto_bins_keep_one_distribution_close():
    rng = np.random.default_rng(0)
    same = [hellinger(rng.normal(size=300), rng.normal(size=300)) for _ in range(20)]
    fine = [hellinger(rng.normal(size=300), rng.normal(size=300), bins=1000) for _ in range(20)]
    assert np.mean(same) < 0.15 and np.mean(fine) > 0.7


def test_rank_neurons_finds_the_planted_neuron():
    rng = np.random.default_rng(0)
    in_group = rng.random(2000) < 0.3
    activations = rng.normal(size=(2000, 40))
    activations[:, 17] += 2 * in_group
    ranking = rank_neurons(activations, in_group, permutations=200)
    assert ranking[0].unit == 17 and ranking[0].p_value < 0.01
    assert [s.distance for s in ranking] == sorted((s.distance for s in ranking), reverse=True)
    null_p = np.array([s.p_value for s in ranking if s.unit != 17])
    assert (null_p < 0.01).mean() < 0.1 and null_p.min() >= 1 / 201
    with pytest.raises(ValueError, match="both groups"):
        rank_neurons(activations, np.zeros(2000, dtype=bool))
