"""g2lstm.compress.export / load_export: a compressed model as one file, read back bit for bit."""

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import g2lstm
from g2lstm import G2LSTM
from g2lstm.compress import (EXPORT_FORMAT, compress, evaluate_under_compression, export, gate_blocks, load_export,
                             to_plain_lstm)
from g2lstm.train import CheckpointError, save_checkpoint

SCHEMES = [
    ("round", {"precision": 0.2}),
    ("round_clip", {"precision": 0.2, "clip": 0.4}),
    ("round_relative", {"precision": 1.0, "clip": 2.0}),
    ("quantize", {"bits": 8}),
    ("quantize", {"bits": 4}),
]
SCHEME_IDS = [f"{m}-{'-'.join(map(str, o.values()))}" for m, o in SCHEMES]


class TinyTagger(nn.Module):
    """A module that no export can rebuild by itself: a bidirectional G2LSTM with projection."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.rnn = G2LSTM(6, 8, num_layers=2, bidirectional=True, proj_size=3)
        self.out = nn.Linear(6, 11)

    def forward(self, tokens):
        return self.out(self.rnn(self.embed(tokens))[0])


def spread(model, factor=4.0):
    """Weights beyond the default init, so that every grid keeps several values."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (torch.equal takes -0.0 for 0.0)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.flatten().view(torch.uint8),
                                                                       b.flatten().view(torch.uint8))


def equal_states(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert same_bits(sa[key], sb[key]), key


# ----------------------------------------------------------------------------- task checkpoints
@pytest.fixture(scope="module")
def lm_checkpoint(tiny_lm_config, tmp_path_factory):
    """A tiny AWD-LSTM (G2LSTM layers, tied embedding and decoder) saved as its trainer saves best.pt."""
    from g2lstm.lm.train import build_model, load_data

    cfg = tiny_lm_config()
    corpus = load_data(cfg.data)
    torch.manual_seed(0)
    model = spread(build_model(cfg.model, len(corpus.vocab)), 8.0)
    path = tmp_path_factory.mktemp("lm") / "best.pt"
    save_checkpoint({"task": "lm", "config": OmegaConf.to_container(cfg, resolve=True), "data_fingerprint": "x",
                     "model": model.state_dict(), "step": 3, "vocab": corpus.vocab.tokens}, path)
    return path


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory):
    """A tiny sentence classifier (bidirectional 2-layer G2LSTM) saved as its trainer saves last.pt."""
    from g2lstm.classify.model import ClassifierConfig, RNNClassifier

    torch.manual_seed(1)
    config = {"cell": "g2lstm", "embed_dim": 6, "hidden_dim": 8, "num_layers": 2, "dropout": 0.1,
              "vocab_size": 12, "num_classes": 2}
    model = spread(RNNClassifier(ClassifierConfig(**config)))
    path = tmp_path_factory.mktemp("classify") / "last.pt"
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randint(2, 12, (3, 5)), torch.tensor([5, 3, 2])).sum().backward()
    optimizer.step()
    save_checkpoint({"task": "classify", "config": {"model": {"cell": "g2lstm"}}, "model": model.state_dict(),
                     "model_config": model.config_dict(), "symbols": ["<pad>", "<unk>", *"abcdefghij"],
                     "optimizer": optimizer.state_dict(), "rng": {"torch": torch.get_rng_state()},
                     "run": {"step": 1}}, path)
    return path


@pytest.mark.parametrize("method, options", SCHEMES, ids=SCHEME_IDS)
def test_lm_export_loads_back_to_the_in_memory_compression_bit_for_bit(lm_checkpoint, tmp_path, method, options):
    loaded = g2lstm.load(lm_checkpoint)
    small, report = compress(loaded.model, method, gates=["input", "forget"], **options)
    sizes = export(lm_checkpoint, tmp_path / "lm.pt", method, **options)
    shipped = g2lstm.load(tmp_path / "lm.pt")

    assert type(shipped) is type(loaded) and shipped.task == "lm" and shipped.path == str(tmp_path / "lm.pt")
    assert shipped.vocab.tokens == loaded.vocab.tokens and shipped.config == loaded.config
    assert not shipped.model.training
    equal_states(shipped.model, small)
    assert all(isinstance(layer, G2LSTM) for layer in shipped.model.rnns)
    assert shipped.model.decoder.weight is shipped.model.encoder.weight  # still tied, one tensor
    assert sizes["report"] == {k: v for k, v in report.items() if k != "blocks"}
    assert sizes["checkpoint_bytes"] == lm_checkpoint.stat().st_size
    assert sizes["blocks"] == 2 * 2 * 2  # 2 layers x (W_ih, W_hh) x (input, forget)

    # The same outputs as the in-memory compression, as G2LSTM layers and as the nn.LSTM they are,
    # and the same test perplexity through the task's own evaluation.
    batch = shipped.encode(["in the beginning god created the heavens and the earth ."])
    with torch.no_grad():
        reference = small.eval()(batch.inputs["words"], small.init_hidden(1))[0]
        assert torch.equal(shipped.model(batch.inputs["words"], shipped.model.init_hidden(1))[0], reference)
        plain = to_plain_lstm(shipped.model)
        assert all(type(layer) is nn.LSTM for layer in plain.rnns)
        assert torch.equal(plain(batch.inputs["words"], plain.init_hidden(1))[0], reference)
    assert shipped.evaluate() == loaded.evaluate(small)
    assert shipped.evaluate() != loaded.evaluate()  # the compression did change the model


@pytest.mark.parametrize("method, options", SCHEMES, ids=SCHEME_IDS)
def test_classifier_export_of_a_last_pt_drops_the_training_state(classifier_checkpoint, tmp_path, method, options):
    loaded = g2lstm.load(classifier_checkpoint)
    small, _ = compress(loaded.model, method, gates=["input", "forget"], **options)
    export(loaded, tmp_path / "classify.pt", method, **options)  # from the loaded model, as from its path
    shipped = g2lstm.load(tmp_path / "classify.pt", task="classify")
    equal_states(shipped.model, small)
    assert shipped.table.symbols == loaded.table.symbols
    tokens, lengths = torch.randint(2, 12, (4, 6)), torch.tensor([6, 4, 2, 1])
    with torch.no_grad():
        reference = small.eval()(tokens, lengths)
        assert torch.equal(shipped.model(tokens, lengths), reference)
        assert torch.allclose(to_plain_lstm(shipped.model)(tokens, lengths), reference, atol=1e-6)
    contents = torch.load(tmp_path / "classify.pt", weights_only=True)
    assert contents["format"] == EXPORT_FORMAT
    assert set(contents["source"]["checkpoint"]) == {"task", "config", "model_config", "symbols"}


# ----------------------------------------------------------------------------- bare layers and modules
@pytest.mark.parametrize("method, options", SCHEMES, ids=SCHEME_IDS)
def test_bare_layers_and_modules_round_trip(tmp_path, method, options):
    torch.manual_seed(2)
    g2 = spread(G2LSTM(5, 7, num_layers=2, bidirectional=True, gates="sharpened", tau=0.5, noise_p=0.3,
                       stochastic_gates=("input", "forget", "output"))).eval()
    export(g2, tmp_path / "g2.pt", method, **options)
    back = load_export(tmp_path / "g2.pt")
    assert type(back) is G2LSTM and not back.training
    assert (back.gates, back.tau, back.noise_p, back.stochastic_gates) == ("sharpened", 0.5, 0.3, ("input", "forget", "output"))
    equal_states(back, compress(g2, method, gates=["input", "forget"], **options)[0])

    plain = spread(nn.LSTM(5, 7, proj_size=3))
    export(plain, tmp_path / "lstm.pt", method, gates=["forget", "cell"], **options)
    back = load_export(tmp_path / "lstm.pt")
    assert type(back) is nn.LSTM and back.proj_size == 3
    equal_states(back, compress(plain, method, gates=["forget", "cell"], **options)[0])

    tagger = spread(TinyTagger()).eval()
    export(tagger, tmp_path / "tagger.pt", method, **options)
    with pytest.raises(ValueError, match="export of a TinyTagger, which it cannot rebuild by itself; pass model="):
        load_export(tmp_path / "tagger.pt")
    back = load_export(tmp_path / "tagger.pt", model=TinyTagger())
    small = compress(tagger, method, gates=["input", "forget"], **options)[0]
    equal_states(back, small)
    tokens = torch.randint(0, 11, (5, 2))
    with torch.no_grad():
        assert torch.equal(back(tokens), small(tokens))
    with pytest.raises(ValueError, match=r"export of a bare TinyTagger, not of a task checkpoint; load it with "
                                         r"g2lstm.compress.load_export"):
        g2lstm.load(tmp_path / "tagger.pt")


def test_float16_rest_and_everything_packed(tmp_path):
    torch.manual_seed(3)
    model = spread(TinyTagger())
    export(model, tmp_path / "half.pt", "quantize", bits=4, gates=["input", "forget", "cell", "output"],
           rest_dtype="float16")
    back = load_export(tmp_path / "half.pt", model=TinyTagger())
    small = compress(model, "quantize", bits=4, gates=["input", "forget", "cell", "output"])[0].state_dict()
    for key, value in back.state_dict().items():
        assert value.dtype == torch.float32
        if key.startswith("rnn.weight_ih") or key.startswith("rnn.weight_hh"):
            assert same_bits(value, small[key]), key  # every gate packed: exactly the quantized weights
        else:
            assert same_bits(value, small[key].half().float()), key  # biases, projections, embedding: float16


# ----------------------------------------------------------------------------- bytes on disk
def expected_packed_bytes(model, method, options, gates=("input", "forget")):
    """The bytes of the chosen gate blocks as an export stores them, counted from their definition."""
    small = compress(model, method, gates=list(gates), **options)[0]
    total = 0
    for b in gate_blocks(small, gates):
        rows, cols = b["block"].shape
        if method == "quantize":
            total += math.ceil(rows * cols * options["bits"] / 8) + 4 * rows  # codes, a float32 scale per row
        else:
            levels = torch.unique(b["block"]).numel()
            total += math.ceil(rows * cols * math.ceil(math.log2(levels)) / 8) + 4 * levels  # codes, codebook
    return total


@pytest.mark.parametrize("method, options, bits", [
    ("round_clip", {"precision": 0.05, "clip": 0.1}, 3),  # 5 levels: 3 bits
    ("round", {"precision": 0.1}, 2),  # default-init weights (|w| < 0.09): 3 levels, 2 bits
    ("quantize", {"bits": 8}, 8),
    ("quantize", {"bits": 4}, 4),
])
def test_the_file_is_as_small_as_its_codes(tmp_path, method, options, bits):
    torch.manual_seed(4)
    lstm = nn.LSTM(96, 128, num_layers=2)  # input and forget blocks: 128 x 96, then 3 of 128 x 128, per gate
    float32 = export(lstm, tmp_path / "float32.pt")
    sizes = export(lstm, tmp_path / "small.pt", method, **options)
    weights = 2 * 128 * (96 + 128 + 128 + 128)
    assert sizes["blocks"] == 8 and sizes["blocks_float32_bytes"] == 4 * weights
    assert sizes["blocks_packed_bytes"] == expected_packed_bytes(lstm, method, options)
    # the codes, and a float32 scale per row (quantize) or a codebook of a few values per block (grids)
    assert weights * bits / 8 < sizes["blocks_packed_bytes"] <= weights * bits / 8 + 8 * 4 * 128

    # The file is the float32 export less what packing the blocks saved: each packed block adds a
    # few zip records and a little pickle, well under 1 kB each.
    expected = float32["bytes"] - sizes["blocks_float32_bytes"] + sizes["blocks_packed_bytes"]
    assert expected <= sizes["bytes"] <= expected + 1000 * sizes["blocks"]
    assert float32["bytes"] - 4 * sum(p.numel() for p in lstm.parameters()) < 4000  # the float32 file is its floats
    assert sizes["bytes"] / float32["bytes"] == pytest.approx(1 - 0.5 * (1 - bits / 32), abs=0.02)


def test_tied_weights_are_stored_once(lm_checkpoint, tmp_path):
    sizes = export(lm_checkpoint, tmp_path / "lm.pt")
    contents = torch.load(tmp_path / "lm.pt", weights_only=True)
    assert contents["tensors"]["decoder.weight"] == {"alias": "encoder.weight"}
    assert contents["compression"] is None and sizes["blocks"] == 0
    # the float32 export holds what the checkpoint holds, so it is about its size
    assert abs(sizes["bytes"] - sizes["checkpoint_bytes"]) < 0.02 * sizes["checkpoint_bytes"]


def test_an_export_exports_again_with_its_checkpoints_metadata(lm_checkpoint, tmp_path):
    export(lm_checkpoint, tmp_path / "q4.pt", "quantize", bits=4)
    again = export(tmp_path / "q4.pt", tmp_path / "q4_float16.pt", rest_dtype="float16")  # the 4-bit model in float16
    assert again["checkpoint_bytes"] is None  # an export is not the float32 checkpoint
    shipped, half = g2lstm.load(tmp_path / "q4.pt"), g2lstm.load(tmp_path / "q4_float16.pt")
    assert half.vocab.tokens == shipped.vocab.tokens and half.config == shipped.config
    for key, value in shipped.model.state_dict().items():
        assert same_bits(half.model.state_dict()[key], value.half().float()), key


def test_evaluate_under_compression_measures_the_exported_files(tmp_path):
    torch.manual_seed(5)
    model = spread(TinyTagger()).eval()
    tokens = torch.randint(0, 11, (6, 2))

    def evaluate(m):
        with torch.no_grad():
            return m(tokens).square().mean().item()

    methods = {"rc": {"method": "round_clip", "precision": 0.2, "clip": 0.4}, "q4": {"method": "quantize", "bits": 4},
               "svd": {"method": "svd", "rank": 1}}
    in_memory = evaluate_under_compression(model, evaluate, methods)
    shipped = evaluate_under_compression(model, evaluate, methods, export_to=tmp_path)
    assert [r["value"] for r in shipped] == [r["value"] for r in in_memory]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float32.pt", "q4.pt", "rc.pt"]
    for row in shipped[1:3]:
        b = row["bytes"]
        # (a model this small is all container overhead, some 0.5 kB per packed block: no smaller as a file)
        assert b["file"] == (tmp_path / f"{row['method']}.pt").stat().st_size
        assert b["float32"] == (tmp_path / "float32.pt").stat().st_size and b["ratio"] == b["file"] / b["float32"]
        assert b["blocks_packed"] < b["blocks_float32"] and b["checkpoint"] is None
    assert "bytes" not in shipped[3] and "bytes" not in in_memory[1]


# ----------------------------------------------------------------------------- bad input
def test_bad_schemes_and_sources(tmp_path, monkeypatch):
    lstm = nn.LSTM(3, 4)
    out = tmp_path / "x.pt"
    for method, match in [("svd", "got 'svd' .its factors would not rebuild"), ("int8", "method='quantize' with bits=8"),
                          ("prune", "method must be None .nothing packed. or one of .'round', 'round_clip', "
                                    "'round_relative', 'quantize'., got 'prune'$")]:
        with pytest.raises(ValueError, match=match):
            export(lstm, out, method, rank=2)
    with pytest.raises(ValueError, match=r"bits must be an int from 2 to 8, got 16"):
        export(lstm, out, "quantize", bits=16)
    with pytest.raises(ValueError, match=r"method 'quantize' takes the options \['bits'\], got \['precision'\]"):
        export(lstm, out, "quantize", precision=0.2)
    with pytest.raises(ValueError, match=r"method 'round_clip' needs a precision .the grid step., got options \['clip'\]"):
        export(lstm, out, "round_clip", clip=0.4)
    with pytest.raises(ValueError, match=r"options \['bits'\] need a method"):
        export(lstm, out, bits=4)
    with pytest.raises(ValueError, match=r"rest_dtype must be one of \('float32', 'float16'\), got 'int8'"):
        export(lstm, out, rest_dtype="int8")
    with pytest.raises(ValueError, match="gates must be a non-empty subset"):
        export(lstm, out, "quantize", gates=["update"])
    with pytest.raises(ValueError, match="precision must be a positive finite number"):
        export(lstm, out, "round", precision=-1.0)
    with pytest.raises(ValueError, match="expected a module containing nn.LSTM or G2LSTM layers"):
        export(nn.Linear(2, 2), out)
    with pytest.raises(TypeError, match="export takes a checkpoint path, a model loaded by g2lstm.load, or an "
                                        "nn.Module containing LSTM layers, got dict"):
        export({"model": {}}, out)
    assert not out.exists()  # nothing written by a refused export
    with monkeypatch.context() as patch:
        patch.setattr(torch, "save", lambda state, f: (_ for _ in ()).throw(OSError(28, "No space left on device")))
        with pytest.raises(CheckpointError, match=r"could not write the checkpoint .*x.pt .\[Errno 28\].*; no x.pt "
                                                  r"was written. Free space in .* and export again$"):
            export(lstm, out, "quantize", bits=4)
    assert sorted(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        export(tmp_path / "missing.pt", out)


def test_files_that_are_not_exports(tmp_path, lm_checkpoint):
    with pytest.raises(ValueError, match=r"best.pt is not an export written by g2lstm.compress.export .no format "
                                         r"'g2lstm-export'.; it is a training checkpoint: load it with g2lstm.load"):
        load_export(lm_checkpoint)
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="garbage.pt is not a readable checkpoint"):
        load_export(tmp_path / "garbage.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other.pt is not an export .* its keys are \['weights'\]"):
        load_export(tmp_path / "other.pt")

    export(nn.LSTM(3, 4), tmp_path / "lstm.pt", "quantize", bits=4)
    contents = torch.load(tmp_path / "lstm.pt", weights_only=True)
    newer = dict(contents, version=2)
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match="newer.pt is an export of format version 2; this g2lstm reads version 1"):
        load_export(tmp_path / "newer.pt")
    damaged = copy.deepcopy(contents)
    segment = damaged["tensors"]["weight_hh_l0"]["segments"][1]
    segment["codes"] = segment["codes"][:3]  # a truncated block
    torch.save(damaged, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match=r"damaged.pt is a damaged export: tensor 'weight_hh_l0' cannot be "
                                              r"rebuilt .3 bytes hold 6 codes of 4 bits, expected 16."):
        load_export(tmp_path / "damaged.pt")


# ----------------------------------------------------------------------------- the command
def test_export_command(lm_checkpoint, tmp_path, capsys):
    from g2lstm.cli import export_checkpoint

    sizes = export_checkpoint([str(lm_checkpoint), str(tmp_path / "lm4.pt"), "--method", "quantize", "--bits", "4",
                               "--evaluate"])
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'lm4.pt'}: {sizes['bytes']:,} bytes, x{sizes['bytes'] / sizes['checkpoint_bytes']:.3f}" in out
    assert f"8 gate blocks: {sizes['blocks_packed_bytes']:,} bytes packed" in out
    loaded = g2lstm.load(lm_checkpoint)
    assert sizes["after"] == loaded.evaluate(compress(loaded.model, "quantize", bits=4)[0])
    assert sizes["before"] == loaded.evaluate()
    assert f"lm test metric: {sizes['before']:.4f} (checkpoint), {sizes['after']:.4f} (export)" in out
    with pytest.raises(ValueError, match="the output .* is the checkpoint"):
        export_checkpoint([str(lm_checkpoint), str(lm_checkpoint)])
    with pytest.raises(ValueError, match="bits must be an int from 2 to 8, got 12"):
        export_checkpoint([str(lm_checkpoint), str(tmp_path / "x.pt"), "--method", "quantize", "--bits", "12"])
