"""Bad input, round two: readers and schemas refuse what they cannot use, naming the file and line
or the key, the value and what is allowed; the Python API refuses what it would misread.

docs/reliability.md lists these cases and what a user sees.
"""

import gzip
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import g2lstm
from g2lstm.classify.model import ClassifierConfig, RNNClassifier
from g2lstm.classify.task import ClassificationTask
from g2lstm.classify.train import classify_config, evaluate as evaluate_classifier, scores, train as train_classifier
from g2lstm.cli import interpret, text_lines, translate_file as translate_main
from g2lstm.config import ConfigValueError, compose_config
from g2lstm.data.lm import read_brown, read_text_file, read_token_file
from g2lstm.data.mt import iwslt_raw_corpus, read_lines
from g2lstm.data.sentiment import Example, load_sentiment, read_rated
from g2lstm.data.symbols import SymbolTable
from g2lstm.interpret import hellinger, integrated_gradients, rank_neurons
from g2lstm.lm.train import train as train_lm
from g2lstm.mt.decode import translate as translate_sentences
from g2lstm.mt.tokenizer import train_tokenizers
from g2lstm.mt.train import build_data
from g2lstm.paper import PaperTask
from g2lstm.train import load_checkpoint, save_checkpoint
from g2lstm.translit.model import Transliterator, transliterator_config
from g2lstm.translit.task import TransliterationTask
from test_bad_input import _mt_checkpoint, run_folder, snapshot  # noqa: F401  (fixture)
from test_lm_train import tiny_config, tiny_corpus  # noqa: F401  (fixture)
from test_mt_train import PAIRS, config as mt_config, corpus  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
BOM = "\ufeff".encode()


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ----------------------------------------------------------------------------- text readers


def _readers(tmp_path):
    """(name, file name, read) of every text reader; ``read`` returns the first token or line read."""
    brown = tmp_path / "brown"
    brown.mkdir()
    return [
        ("lm text", tmp_path / "train.txt", lambda p: read_text_file(p)[0][0]),
        ("lm tokens", tmp_path / "ptb.train.txt", lambda p: read_token_file(p)[0][0]),
        ("brown", brown / "ca01", lambda p: read_brown(p.parent)[0][0]),
        ("mt", tmp_path / "train.de", lambda p: read_lines(p)[0]),
        ("mt gz", tmp_path / "train.de.gz", lambda p: read_lines(p)[0]),
        ("sentiment", tmp_path / "movieReviewSnippets_GroundTruth.txt", lambda p: read_rated(p).examples[0].id),
        ("interpret texts=", tmp_path / "texts.txt", lambda p: text_lines(str(p))[0]),
    ]


def _write(path: Path, text: bytes) -> None:
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)


def _content(name: str) -> tuple[bytes, str]:
    """A file's lines for the reader ``name`` (the second line is where a NUL goes) and what the first reads as."""
    if name == "brown":
        return b"word/nn more/ap\nsecond/ap line/nn\n", "word"
    if name == "sentiment":
        return b"id1\t1.5\tgood film\r\nid2\t-2\tbad film\r\n", "id1"
    if name in ("mt", "mt gz", "interpret texts="):
        return b"word and more\nsecond line\n", "word and more"
    return b"word and more\nsecond line\n", "word"


@pytest.mark.parametrize("reader", range(7))
def test_every_text_reader_strips_a_bom_and_refuses_a_nul_with_the_file_and_line(tmp_path, reader):
    name, path, read = _readers(tmp_path)[reader]
    text, first = _content(name)
    _write(path, BOM + text)
    assert read(path) == first  # not '\ufeffword': the BOM is no part of the first word
    lines = text.split(b"\n")
    _write(path, b"\n".join([lines[0], lines[1][:3] + b"\x00" + lines[1][3:], *lines[2:]]))
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: a NUL byte (a binary file, or a UTF-16 one?) at column 4")):
        read(path)
    _write(path, text + BOM + text)  # two files joined with their BOMs
    with pytest.raises(ValueError, match=re.escape(f"{path}:3: a byte-order mark (U+FEFF) after the start")):
        read(path)


def test_translate_input_strips_a_bom_and_refuses_a_nul(tmp_path):
    checkpoint = _mt_checkpoint(tmp_path / "best.pt")
    source, out = tmp_path / "in.de", tmp_path / "out.en"
    args = [str(checkpoint), "--input", str(source), "--output", str(out), "--greedy", "--max-len-b", "2"]
    source.write_bytes(BOM + "ein hund läuft .\n".encode())
    plain = tmp_path / "plain.de"
    plain.write_text("ein hund läuft .\n", encoding="utf-8")
    translate_main(args)
    translated = out.read_text(encoding="utf-8")
    translate_main([str(checkpoint), "--input", str(plain), "--output", str(out), "--greedy", "--max-len-b", "2"])
    assert translated == out.read_text(encoding="utf-8")  # the BOM changed nothing
    source.write_bytes(b"ein hund\nl\x00uft\n")
    with pytest.raises(ValueError, match=re.escape(f"{source}:2: a NUL byte")):
        translate_main(args)


# ----------------------------------------------------------------------------- sentiment ratings


@pytest.mark.parametrize("rating", ["nan", "99", "-1e9", "inf", "-4.5"])
def test_a_rating_that_is_not_finite_or_out_of_range_names_the_file_and_line(tmp_path, rating):
    path = tmp_path / "movieReviewSnippets_GroundTruth.txt"
    path.write_text(f"1\t1.5\tgood\r\n2\t{rating}\tstrange\r\n3\t-1\tbad\r\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: expected a rating (2nd field) in [-4, 4], "
                                                   f"found {rating!r}")):
        read_rated(path)


def test_one_class_data_is_refused_naming_the_file_or_the_split(tmp_path):
    path = tmp_path / "tweets_GroundTruth.txt"
    path.write_text("1\t1.5\tgood\r\n2\t0\tneutral\r\n3\t2\tgreat\r\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{path}: expected sentences of both polarities (ratings > 0 "
                                                   "and < 0), found 2 positive and 0 negative")):
        read_rated(path)
    # both classes in the file, but one split holds one: 9 negative sentences and 1 positive
    movies = tmp_path / "movieReviewSnippets_GroundTruth.txt"
    movies.write_text("".join(f"{i}\t{-1 if i else 1}\tsentence {i}\r\n" for i in range(10)), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{movies}, the ") + r"(valid|test) split of data.split_seed=0: "
                       r"expected sentences of both polarities"):
        load_sentiment(tmp_path)


# ----------------------------------------------------------------------------- MT evaluation lines


def test_a_blank_line_in_an_mt_evaluation_split_is_refused_with_the_file_and_line(corpus):  # noqa: F811
    (corpus / "test.en").write_text("children play in the park .\n\ntwo women read .\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{corpus / 'test.en'}:2: a blank line in an evaluation split "
                                                   f"(its pair is {corpus / 'test.de'}:2)")):
        build_data(mt_config(corpus))
    (corpus / "test.en").write_text("children play in the park .\na dog runs .\ntwo women read .\n", encoding="utf-8")
    (corpus / "valid.de").write_text("ein mann fährt fahrrad .\n  \neine frau liest ein buch .\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{corpus / 'valid.de'}:2: a blank line in an evaluation split")):
        build_data(mt_config(corpus))
    # a blank line in the training files is no error: the pair is dropped by data.filter (min_len 1)
    (corpus / "valid.de").write_text("".join(s + "\n" for s, _ in PAIRS[:3]), encoding="utf-8")
    sources = [s for s, _ in PAIRS * 4]
    sources[0] = ""
    (corpus / "train.de").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    assert len(build_data(mt_config(corpus))["train"]) == len(PAIRS) * 4 - 1


def test_an_empty_seg_of_a_raw_iwslt_test_set_names_its_file_and_line(tmp_path):
    for side, text in (("de", "hallo welt"), ("en", "hello world")):
        (tmp_path / f"train.tags.de-en.{side}").write_text(f"<url>x</url>\n{text}\n", encoding="utf-8")
    segs = {"de": ["eins", "zwei"], "en": ["one", ""]}
    for side, texts in segs.items():
        (tmp_path / f"IWSLT14.TED.tst2010.de-en.{side}.xml").write_text(
            "<refset>\n<doc>\n" + "".join(f'<seg id="{i}"> {t} </seg>\n' for i, t in enumerate(texts, 1)) + "</doc>\n",
            encoding="utf-8")
    assert iwslt_raw_corpus(tmp_path)["tst2010"][1] == ("zwei", "")  # as it was, when not evaluated
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'IWSLT14.TED.tst2010.de-en.en.xml'}:4: a blank line "
                                                   f"in an evaluation split (its pair is "
                                                   f"{tmp_path / 'IWSLT14.TED.tst2010.de-en.de.xml'}:4)")):
        iwslt_raw_corpus(tmp_path, evaluation=["tst2010"])


def test_translate_refuses_a_blank_line_it_would_score(tmp_path):
    checkpoint = _mt_checkpoint(tmp_path / "best.pt")
    source, reference = tmp_path / "in.de", tmp_path / "ref.en"
    source.write_text("ein hund läuft .\n\n", encoding="utf-8")
    reference.write_text("a dog runs .\ntwo women read .\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{source}:2: a blank line in an evaluation split (its pair is "
                                                   f"{reference}:2)")):
        translate_main([str(checkpoint), "--input", str(source), "--reference", str(reference), "--greedy"])


# ----------------------------------------------------------------------------- schemas


ACCEPTED_THEN_CRASHED = [  # (root, overrides, message start, what is expected)
    ("lm", ["seed=-1"], "seed=-1", "an integer in [0, 4294967295]"),
    ("classify", ["seed=4294967296"], "seed=4294967296", "an integer in [0, 4294967295]"),
    ("lm", ["train.lr=inf"], "train.lr=inf", "a finite value > 0"),
    ("mt", ["train.lr=inf"], "train.lr=inf", "a finite value > 0"),
    ("classify", ["train.lr=inf"], "train.lr=inf", "a finite value > 0"),
    ("translit", ["train.lr=inf"], "train.lr=inf", "a finite value > 0"),
    ("classify", ["model.pooling=none"], "model.pooling='none'", "a sentence pooling among ['last', 'mean', 'max']"),
    ("translit", ["data.train_books=[]"], "data.train_books=[]", "a non-empty list of Bible book numbers in 1..66, or null"),
    ("translit", ["data.valid_books=[]"], "data.valid_books=[]", "a non-empty list of Bible book numbers"),
    ("mt", ["data.tokenizer.vocab_size=5"], "data.tokenizer.vocab_size=5", "a vocabulary size >= 6 for model_type=bpe"),
    ("mt", ["data.tokenizer.character_coverage=0.9"], "data.tokenizer.character_coverage=0.9", "[0.98, 1]"),
    ("mt", ["model.share_embeddings=true", "data.tokenizer.joint=false"], "model.share_embeddings=True",
     "false with separate vocabularies (data.tokenizer.joint=false)"),
    ("mt", ["train.min_lr=0.01"], "train.min_lr=0.01", "a value <= train.lr=0.001"),
    ("paper", ["seed=-1"], "seed=-1", "an integer in [0, 4294967295]"),
    ("interpret", ["neurons.seed=-1"], "neurons.seed=-1", "an integer in [0, 4294967295]"),
    ("lm", ["train.schedules.tau={end: 0, steps: 10, shape: linear}"],
     "train.schedules.tau={'end': 0, 'steps': 10, 'shape': 'linear'}", "with end > 0"),
    ("classify", ["train.schedules.noise_p={end: 2, steps: 10, shape: linear}"],
     "train.schedules.noise_p={'end': 2, 'steps': 10, 'shape': 'linear'}", "with end in [0, 1]"),
    ("lm", ["train.max_minutes=0"], "train.max_minutes=0.0", "a value > 0, or null"),
    ("classify", ["train.max_minutes=0"], "train.max_minutes=0.0", "a value > 0, or null"),
]


@pytest.mark.parametrize("root, overrides, start, expected", ACCEPTED_THEN_CRASHED)
def test_a_value_the_trainer_cannot_use_is_refused_by_the_schema(root, overrides, start, expected):
    with pytest.raises(ConfigValueError) as error:
        compose_config(root, overrides)
    message = str(error.value)
    assert message.startswith(f"{start}: expected ") and expected in message


def test_accepted_neighbours_of_the_refused_values_still_compose():
    assert compose_config("mt", ["model.share_embeddings=true", "data.tokenizer.joint=true",
                                 "data.tokenizer.vocab_size=6", "data.tokenizer.character_coverage=0.98",
                                 "train.min_lr=0.001"]).model.share_embeddings
    assert compose_config("mt", ["data.tokenizer.model_type=char", "data.tokenizer.vocab_size=5"])
    assert compose_config("lm", ["seed=0", "train.max_minutes=0.5"]).seed == 0
    assert compose_config("translit", ["data.train_books=null"]).data.train_books is None


def test_a_vocabulary_too_small_for_the_training_split_says_the_size_that_works():
    needed = 4 + len(set("".join(s for pair in PAIRS for s in pair).replace(" ", ""))) + 1  # specials, chars, '▁'
    with pytest.raises(ValueError, match=re.escape(f"data.tokenizer.vocab_size=8 is too small for this training "
                                                   f"split: a bpe model of it needs at least {needed} pieces")):
        train_tokenizers(PAIRS, vocab_size=8)
    assert train_tokenizers(PAIRS, vocab_size=needed).src.vocab_size == needed


def test_a_cuda_device_without_cuda_is_refused_before_the_trainer_reads_or_writes(no_cuda, tiny_corpus, run_folder):  # noqa: F811
    cfg = tiny_config(tiny_corpus, "device=cuda")  # composing is a value check: a GPU config composes anywhere
    before = snapshot(run_folder)
    with pytest.raises(ConfigValueError, match=re.escape("device='cuda': expected a device of this machine, but "
                                                         "torch.cuda.is_available() is False on this machine; "
                                                         "use device=cpu")):
        train_lm(cfg, run_folder)
    assert snapshot(run_folder) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_the_hydra_entry_point_refuses_device_cuda_without_cuda(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "train_classifier.py"), "device=cuda",
                           f"hydra.run.dir={run}"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's package
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Error in the config: device='cuda': expected a device of this machine, but torch.cuda.is_available() " \
           "is False" in done.stderr
    assert not run.exists()


# ----------------------------------------------------------------------------- checkpoints on a machine without CUDA


def test_a_healthy_checkpoint_loaded_onto_cuda_without_cuda_is_not_called_damaged(no_cuda, tmp_path):
    path = _mt_checkpoint(tmp_path / "best.pt")
    for load in (lambda: g2lstm.load(path, device="cuda"), lambda: load_checkpoint(path, map_location="cuda:0")):
        with pytest.raises(ValueError) as error:
            load()
        message = str(error.value)
        assert message.startswith(f"cannot load {path} onto device 'cuda") and "torch.cuda.is_available() is False" in message
        assert "damaged" not in message and "train.resume=false" not in message
    assert g2lstm.load(path).task == "mt"  # on the CPU it loads


# ----------------------------------------------------------------------------- translate.py


@pytest.mark.parametrize("target", ["checkpoint", "--input", "--reference"])
def test_translate_refuses_an_output_that_is_a_file_it_reads(tmp_path, target):
    checkpoint = _mt_checkpoint(tmp_path / "best.pt")
    source, reference = tmp_path / "in.de", tmp_path / "ref.en"
    source.write_text("ein hund läuft .\n", encoding="utf-8")
    reference.write_text("a dog runs .\n", encoding="utf-8")
    output = {"checkpoint": checkpoint, "--input": source, "--reference": reference}[target]
    spelled = tmp_path / ".." / tmp_path.name / output.name  # another spelling of the same path
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"--output {spelled} is the {target} {output}; expected another file")):
        translate_main([str(checkpoint), "--input", str(source), "--reference", str(reference), "--output", str(spelled)])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("option", ["--beam", "--threads", "--max-tokens"])
def test_translate_refuses_a_count_of_zero_like_argparse(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        translate_main([str(tmp_path / "best.pt"), option, "0"])
    assert exit_.value.code == 2
    assert f"error: argument {option}: expected an integer > 0, got 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- interpret


@pytest.mark.parametrize("case", ["missing", "empty", "blank lines"])
def test_interpret_refuses_an_unusable_texts_file_before_loading_a_checkpoint(tmp_path, case):
    texts = tmp_path / "texts.txt"
    if case != "missing":
        texts.write_text("" if case == "empty" else "\n  \n", encoding="utf-8")
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exit_:  # the checkpoint does not exist: the texts are checked first
        interpret([f"checkpoints=[{tmp_path}/missing.pt]", f"out_dir={out}", f"texts={texts}"])
    expected = "no such file" if case == "missing" else "the file holds no text (no non-blank line)"
    assert str(exit_.value) == f"Error in the config: texts={texts}: {expected}; expected " + (
        "a UTF-8 text file, one text a line" if case == "missing" else "one text a line")
    assert not out.exists()


def test_interpret_refuses_an_out_dir_that_is_a_file(tmp_path):
    out = tmp_path / "report.md"
    out.write_text("mine\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        interpret([f"checkpoints=[{tmp_path}/missing.pt]", f"out_dir={out}"])
    assert str(exit_.value) == f"Error in the config: out_dir={out}: is a file; expected a folder for the report " \
                               "(made if missing)"
    assert out.read_text(encoding="utf-8") == "mine\n"


def test_integrated_gradients_names_a_baseline_of_another_shape():
    weights = torch.randn(5)
    inputs = torch.randn(2, 5)
    with pytest.raises(ValueError, match=re.escape("baselines[0]: expected a tensor of the input's shape (2, 5) "
                                                   "(or (1, 5), one baseline for every example), got shape (3, 5)")):
        integrated_gradients(lambda x: (x * weights).sum(-1), inputs, baselines=torch.zeros(3, 5))
    with pytest.raises(ValueError, match=re.escape("baselines: expected one per input (1), got 2")):
        integrated_gradients(lambda x: (x * weights).sum(-1), inputs, baselines=(0.0, 0.0))
    attributions, delta = integrated_gradients(lambda x: (x * weights).sum(-1), inputs, baselines=torch.zeros(1, 5))
    torch.testing.assert_close(attributions, inputs * weights)  # a broadcast baseline still works


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_hellinger_and_rank_neurons_refuse_a_non_finite_sample(bad):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(3, 1, size=50)
    assert hellinger(a, b) > 0.5  # far apart; one bad value used to make it 0.0
    a[7] = bad
    with pytest.raises(ValueError, match=re.escape("hellinger's sample a holds ") + r"\d NaN and \d infinite value\(s\) "
                       r"of 50 \(the first at index 7\); expected finite values"):
        hellinger(a, b)
    activations = np.stack([np.concatenate([a, b]), rng.normal(size=100)], 1)
    with pytest.raises(ValueError, match=re.escape("rank_neurons' activations of unit 0 holds")):
        rank_neurons(activations, np.arange(100) < 50)


def _transliterator() -> TransliterationTask:
    inputs, outputs = SymbolTable.build(["abc"]), SymbolTable.build(["абц"])
    model = Transliterator(transliterator_config(len(inputs), len(outputs), embed_dim=4, hidden_dim=4))
    return TransliterationTask(model, inputs, outputs, {"model": {"cell": "lstm"}}, "<memory>", "cpu")


def test_a_list_of_texts_api_given_a_bare_string_raises_a_type_error():
    task = _transliterator()
    assert len(task.transliterate(["abc", "cab"])) == 2
    with pytest.raises(TypeError, match=re.escape("transliterate() takes a list of texts, got a str ('abc'); "
                                                  "pass [text] for one text")):
        task.transliterate("abc")
    with pytest.raises(TypeError, match=re.escape("encode() takes a list of texts, got a str")):
        task.encode("abc")
    table = SymbolTable.build([["good"]])
    classifier = ClassificationTask(RNNClassifier(ClassifierConfig(len(table), 2, embed_dim=4, hidden_dim=4)), table,
                                    {}, "<memory>", "cpu")
    with pytest.raises(TypeError, match=re.escape("predict() takes a list of texts, got a str ('good film')")):
        classifier.predict("good film")
    tokenizers = train_tokenizers(PAIRS * 4, vocab_size=60)
    from g2lstm.mt.model import ModelConfig, Seq2Seq

    model = Seq2Seq(ModelConfig(embed_dim=8, hidden_dim=8), tokenizers.src.vocab_size, tokenizers.tgt.vocab_size)
    with pytest.raises(TypeError, match=re.escape("translate() takes a list of texts, got a str")):
        translate_sentences(model, tokenizers, "ein hund läuft .")


# ----------------------------------------------------------------------------- paper table


def test_the_paper_table_refuses_a_checkpoint_given_under_another_model_kind(tmp_path):
    table = SymbolTable.build([["good", "bad"]])
    model = RNNClassifier(ClassifierConfig(len(table), 2, cell="g2lstm", embed_dim=4, hidden_dim=4))
    path = tmp_path / "g2.pt"
    save_checkpoint({"task": "classify", "config": {"model": {"cell": "g2lstm"}}, "model": model.state_dict(),
                     "model_config": model.config_dict(), "symbols": table.symbols}, path)
    task = PaperTask("classify", OmegaConf.create({"checkpoints": {"lstm": str(path), "g2lstm": str(path)}}),
                     tmp_path, seed=1, root=Path("/"))
    with pytest.raises(ValueError, match=re.escape(f"classify.checkpoints.lstm={path}: a checkpoint of "
                                                   "model.cell='g2lstm', not 'lstm'; give it as classify.checkpoints.g2lstm")):
        task.model("lstm")
    assert task.model("g2lstm")[1] == str(path)


# ----------------------------------------------------------------------------- classifier baselines


def test_scores_stand_beside_the_majority_class_baselines():
    labels = torch.tensor([1, 1, 1, 0])
    result = scores(torch.tensor([0, 0, 1, 0]), labels, 2, train_majority=0)
    assert result["accuracy"] == 0.5
    assert result["majority_accuracy"] == 0.75 and result["train_majority_accuracy"] == 0.25
    assert "train_majority_accuracy" not in scores(labels, labels, 2)
    table = SymbolTable.build([["good"], ["bad"]])
    model = RNNClassifier(ClassifierConfig(len(table), 2, embed_dim=4, hidden_dim=4))
    examples = [Example(str(i), r, t) for i, (r, t) in enumerate([(1, "good"), (2, "good"), (-1, "bad")])]
    evaluated = evaluate_classifier(model, table, examples, train_majority=0)
    assert evaluated["majority_accuracy"] == pytest.approx(2 / 3) and evaluated["train_majority_accuracy"] == pytest.approx(1 / 3)


def test_results_json_carries_each_evaluated_sets_majority_baseline(tmp_path):
    data = tmp_path / "sentiment"
    data.mkdir()
    (data / "movieReviewSnippets_GroundTruth.txt").write_text(  # 24 positive, 16 negative
        "".join(f"{i}\t1.5\ta good film\r\n" if i % 5 < 3 else f"{i}\t-1.5\ta dull film\r\n" for i in range(40)),
        encoding="utf-8")
    (data / "tweets_GroundTruth.txt").write_text(  # 8 of 10 positive
        "".join(f"t{i}\t{2 if i < 8 else -2}\tso good\r\n" for i in range(10)), encoding="utf-8")
    cfg = classify_config([f"data.root={data}", "data.out_of_domain=[tweets]", "data.min_count=1", "model.embed_dim=4",
                           "model.hidden_dim=4", "train.batch_size=8", "train.max_epochs=1", "threads=1"])
    result = train_classifier(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    tweets = saved["out_of_domain"]["tweets"]
    assert tweets["majority_accuracy"] == pytest.approx(0.8)
    splits = load_sentiment(data, 0)
    train_positive = sum(e.label for e in splits["train"]) / len(splits["train"])
    assert train_positive > 0.5 and tweets["train_majority_accuracy"] == pytest.approx(0.8)  # both mostly positive
    share = sum(e.label for e in splits["test"]) / len(splits["test"])
    assert saved["majority_accuracy"] == pytest.approx(max(share, 1 - share)) == result["majority_accuracy"]
