"""The sentence classifier: pooling, a tiny model overfits, resume is bit-exact, a run finishes."""

import json

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

import g2lstm
from g2lstm import diagnostics, runtime, trace
from g2lstm.classify.model import POOLINGS, ClassifierConfig, RNNClassifier
from g2lstm.classify.train import classify_config, scores, train
from g2lstm.data.sentiment import MOVIES, load_sentiment, sentiment_path, tokenize
from g2lstm.data.symbols import SymbolTable
from g2lstm.protocol import Batch, InspectableModel
from g2lstm.runtime import load_checkpoint

needs_data = pytest.mark.skipif(not sentiment_path(MOVIES).is_file(), reason="shared sentiment data not present")
TINY = ["model.embed_dim=8", "model.hidden_dim=8", "train.batch_size=16", "train.log_every=2",
        "data.out_of_domain=[tweets]", "threads=1"]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_pooling_ignores_padding_and_protocol_matches_forward(pooling):
    torch.manual_seed(0)
    model = RNNClassifier(ClassifierConfig(20, 3, cell="g2lstm", pooling=pooling, embed_dim=6, hidden_dim=5)).eval()
    tokens = torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0]])
    lengths = torch.tensor([4, 2])
    logits = model(tokens, lengths)
    padded = model(torch.cat([tokens, torch.zeros(2, 3, dtype=torch.long)], 1), lengths)
    alone = model(tokens[1:, :2], lengths[1:])
    if pooling == "none":
        assert logits.shape == (2, 4, 3)
        torch.testing.assert_close(padded[:, :4], logits)
        torch.testing.assert_close(alone[0], logits[1, :2])
    else:
        assert logits.shape == (2, 3)
        torch.testing.assert_close(padded, logits)
        torch.testing.assert_close(alone[0], logits[1])
    batch = Batch({"tokens": tokens, "lengths": lengths})
    embedded = model.embed(batch)
    assert set(embedded) == {"tokens"} and embedded["tokens"].shape == (2, 4, 6)
    torch.testing.assert_close(model.output_layer(model.extract_features(batch, embedded)), logits)
    assert list(model.recurrent_layers()) == ["rnn"]


def test_trace_records_both_directions_of_the_packed_layer_in_training():
    torch.manual_seed(0)
    model = RNNClassifier(ClassifierConfig(20, 2, cell="g2lstm", embed_dim=6, hidden_dim=5))
    tokens, lengths = torch.tensor([[5, 6, 7, 8], [9, 4, 0, 0]]), torch.tensor([4, 2])
    with trace.record(model) as recorded:
        model(tokens, lengths)  # the trace checks its replay against the module's own output
    for direction in (0, 1):
        layer = recorded.layer("rnn", layer=0, direction=direction)
        assert layer.f.shape == (4, 2, 5) and layer.mask.sum() == 6


def test_bad_model_config():
    with pytest.raises(ValueError, match="pooling='attention': expected one of"):
        ClassifierConfig(10, 2, pooling="attention")
    with pytest.raises(ValueError, match="cell='gru': expected one of"):
        ClassifierConfig(10, 2, cell="gru")
    with pytest.raises(ValueError, match="sequences must not be empty"):
        SymbolTable.build([["a"]]).batch([["a"], []])


def test_scores():
    s = scores(torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0]), 2)
    assert s["accuracy"] == 0.75
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


@pytest.fixture
def one_thread():
    """One thread, as the trainers run: two threads on the shared 2-core machine are 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@needs_data
@pytest.mark.parametrize("cell", ["lstm", "g2lstm"])
def test_tiny_model_overfits_a_small_batch(cell, one_thread):
    torch.manual_seed(0)
    examples = load_sentiment()["train"][:16]
    sentences = [tokenize(e.text) for e in examples]
    table = SymbolTable.build(sentences)
    tokens, lengths = table.batch(sentences)
    labels = torch.tensor([e.label for e in examples])
    model = RNNClassifier(ClassifierConfig(len(table), 2, cell=cell, embed_dim=16, hidden_dim=16, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(model(tokens, lengths), labels).backward()
        optimizer.step()
    model.eval()
    assert torch.equal(model(tokens, lengths).argmax(-1), labels)


@pytest.mark.slow
@needs_data
def test_resume_is_bit_exact(tmp_path):
    """4 steps, a stop, 4 more after a resume == 8 steps in one go (validation every 3 steps)."""
    overrides = [*TINY, "model.cell=g2lstm", "train.eval_every=3"]
    straight = train(classify_config([*overrides, "train.max_steps=8"]), tmp_path / "a")
    first = train(classify_config([*overrides, "train.max_steps=4"]), tmp_path / "b")
    assert first == {"run_dir": str(tmp_path / "b"), "steps": 4, "epochs": 0, "stopped": "max_steps"}
    resumed = train(classify_config([*overrides, "train.max_steps=8"]), tmp_path / "b")
    assert resumed["steps"] == straight["steps"] == 8
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(tmp_path / "a" / name), load_checkpoint(tmp_path / "b" / name)
        for key, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][key]), (name, key)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["trainer"] == b["trainer"]
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])


@pytest.mark.slow
@needs_data
def test_a_run_finishes_with_test_and_out_of_domain_scores(figures, tmp_path):
    result = train(classify_config([*TINY, "model.cell=sharpened", "train.max_epochs=1", "train.batch_size=256"]), tmp_path)
    assert result["stopped"] == "max_epochs=1 reached" and result["steps"] == 34  # ceil(8454 / 256)
    assert result["sentences"] == 1057
    assert set(result["out_of_domain"]) == {"tweets"} and result["out_of_domain"]["tweets"]["sentences"] == 4196
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "config.yaml").is_file()
    watched = [r for r in runtime.MetricsLog(tmp_path / "metrics.jsonl").read() if r.get("event") == "gates"]
    assert [r["step"] for r in watched] == [0]  # train.saturation_every=50: the initial gates only
    assert set(watched[0]["layers"]) == {"rnn/l0", "rnn/l0_reverse"}
    figures.check_saturation(tmp_path / "saturation.png", watched)

    loaded = g2lstm.load(tmp_path / "best.pt")
    assert loaded.task == "classify" and not loaded.model.training and isinstance(loaded.model, InspectableModel)
    assert loaded.evaluate() == pytest.approx(100 * result["accuracy"])
    # the scores recomputed from the loaded model's predictions, one sentence at a time, with sklearn
    # (34 steps of this tiny model learn little: 0.51 measured, near the majority class's 0.504)
    test = loaded.data["test"]
    predicted = [loaded.labels.index(loaded.predict([e.text])[0]) for e in test]
    labels = [e.label for e in test]
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-6)
    assert result["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-6)
    assert loaded.evaluate(split="tweets", metric="macro_f1") == pytest.approx(100 * result["out_of_domain"]["tweets"]["macro_f1"])
    batch = loaded.encode(["A gorgeous, witty film.", "Dull"])
    assert batch.tokens["tokens"] == [["a", "gorgeous", ",", "witty", "film", "."], ["dull"]]
    assert batch.inputs["lengths"].tolist() == [6, 1] and batch.inputs["tokens"][1, 1:].eq(0).all()
    seen = []
    hook = loaded.model.embedding.register_forward_hook(lambda m, args, out: seen.append(out))
    embedded = loaded.model.embed(batch)
    hook.remove()
    assert len(seen) == 1 and torch.equal(seen[0], embedded["tokens"])
    logits = loaded.model.output_layer(loaded.model.extract_features(batch, embedded))
    torch.testing.assert_close(logits, loaded.model(batch.inputs["tokens"], batch.inputs["lengths"]))
    assert loaded.predict(["A gorgeous, witty film."])[0] in ("negative", "positive")
    stats = diagnostics.collect_gate_stats(loaded.model, *loaded.gate_batches(sentences=20, batch_size=8))
    assert stats.counts


def test_report_of_finished_runs(tmp_path):
    from g2lstm.classify.report import collect, markdown

    for cell, seed, accuracy in [("g2lstm", 1, 0.70), ("lstm", 1, 0.60), ("lstm", 2, 0.64)]:
        run = tmp_path / f"{cell}_{seed}"
        run.mkdir()
        (run / "config.yaml").write_text(f"seed: {seed}\n")
        (run / "results.json").write_text(json.dumps({
            "task": "classify", "cell": cell, "steps": 10, "epochs": 1, "train_minutes": 0.5, "stopped": "x",
            "accuracy": accuracy, "macro_f1": accuracy - 0.01, "out_of_domain": {"tweets": {"accuracy": 0.5}}}))
    rows = collect(str(tmp_path / "*"))
    assert [(r["cell"], r["seed"]) for r in rows] == [("g2lstm", 1), ("lstm", 1), ("lstm", 2)]
    text = markdown(rows)
    assert "| lstm | 1 | 10 | 0.5 | 60.00 | 59.00 | 50.00 |" in text  # lstm before g2lstm, in percent
    assert "| lstm | 2 | 62.0 ± 2.8 | 61.0 ± 2.8 | 50.0 ± 0.0 |" in text
    assert text.index("| lstm | 1 |") < text.index("| g2lstm | 1 |")
