"""Bad input at every entry point: each case gets a clear error of a known type that names the key
or file, the value and what was expected, and leaves the run folder as it was.

docs/reliability.md lists these cases and what a user sees.
"""

import gzip
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import g2lstm
from g2lstm import runtime
from g2lstm.classify.train import train as train_classifier
from g2lstm.cli import interpret, translate_file as translate_main
from g2lstm.config import CONF_ROOT, ConfigError, ConfigValueError, compose_config, config_dir, register_schemas, validate
from g2lstm.data.lm import load_corpus, read_brown, read_text_file
from g2lstm.data.mt import read_lines, read_parallel
from g2lstm.lm.train import train as train_lm
from g2lstm.mt.model import ModelConfig, Seq2Seq
from g2lstm.mt.tokenizer import train_tokenizers
from g2lstm.mt.train import build_data, train as train_mt
from g2lstm.runtime import CheckpointError
from g2lstm.translit.train import train as train_translit

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes: equal snapshots mean nothing was written."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run_folder(tmp_path):
    """A run folder with files in it, to show that a refused command changes none of them."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("seed: 1\n", encoding="utf-8")
    (folder / "metrics.jsonl").write_text('{"step": 1}\n', encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------- configs

WRONG_TYPES = [  # (root, override, full key): refused when the config is composed
    ("lm", "model.nhid=abc", "model.nhid"),
    ("lm", "train.lr=abc", "train.lr"),
    ("lm", "seed=x", "seed"),
    ("mt", "model.hidden_dim=abc", "model.hidden_dim"),
    ("mt", "data.tokenizer.joint=maybe", "data.tokenizer.joint"),
    ("paper", "threads=abc", "threads"),
    ("classify", "model.bidirectional=maybe", "model.bidirectional"),
    ("classify", "train.lr=abc", "train.lr"),
    ("translit", "data.max_chars=x", "data.max_chars"),
    ("translit", "train.valid_pieces=all", "train.valid_pieces"),
    ("interpret", "max_texts=abc", "max_texts"),
    ("interpret", "gates.enabled=maybe", "gates.enabled"),
    ("interpret", "explore.budget_mb=big", "explore.budget_mb"),
]


@pytest.mark.parametrize("root, override, key", WRONG_TYPES)
def test_a_wrong_type_is_refused_at_composition_with_the_full_key_and_value(root, override, key):
    with pytest.raises(ConfigError) as error:
        compose_config(root, [override])
    message = str(error.value)
    assert f"full_key: {key}" in message and repr(override.split("=")[1]) in message


UNKNOWN_KEYS = [  # (root, overrides, full key): the schemas are closed
    ("lm", ["train.lrr=1"], "train.lrr"),
    ("lm", ["data=brown", "data.translation=5"], "data.translation"),  # a key of another source
    ("mt", ["model.hiden_dim=8"], "model.hiden_dim"),
    ("paper", ["lm.folderr=x"], "lm.folderr"),
    ("classify", ["train.lrr=1"], "train.lrr"),
    ("translit", ["model.pooling=max"], "model.pooling"),  # fixed by the transliterator
    ("translit", ["data.split_seed=1"], "data.split_seed"),  # a key of the classify data
    ("interpret", ["rnnvis.top=3"], "rnnvis.top"),
    ("interpret", ["checkpoint=[a.pt]"], "checkpoint"),
    ("interpret", ["explore.out=x.html"], "explore.out"),  # the page is out_dir/explore.html
]


@pytest.mark.parametrize("root, overrides, key", UNKNOWN_KEYS)
def test_an_unknown_key_is_refused(root, overrides, key):
    with pytest.raises(ConfigError, match=f"Could not override '{re.escape(key)}'"):
        compose_config(root, overrides)


def test_a_key_added_with_plus_to_a_schema_is_refused():
    with pytest.raises(ConfigValueError, match=r"train\.lrr=1: expected no such key: LMTrainConfig has \["):
        compose_config("lm", ["+train.lrr=1"])


@pytest.mark.parametrize("root", ["mt", "classify", "translit"])
def test_g2_options_take_g2lstm_keywords_only_at_composition(root):
    cfg = compose_config(root, ["+model.g2_options.noise_mode=sequence"])  # g2_options is open ...
    assert cfg.model.g2_options.noise_mode == "sequence"
    with pytest.raises(ConfigValueError, match=r"model\.g2_options=\{'bogus': 1\}: expected G2LSTM keywords"):
        compose_config(root, ["+model.g2_options.bogus=1"])  # ... to G2LSTM's keywords


OUT_OF_RANGE = [  # (root, overrides, message start, what is expected)
    ("lm", ["train.batch_size=0"], "train.batch_size=0", "> 0"),
    ("lm", ["train.bptt=0"], "train.bptt=0", "> 0"),
    ("lm", ["train.max_steps=0"], "train.max_steps=0", "> 0, or null"),
    ("lm", ["train.lr=-1"], "train.lr=-1.0", "> 0"),
    ("lm", ["model.nhid=0"], "model.nhid=0", "> 0"),
    ("lm", ["model.dropout=1.5"], "model.dropout=1.5", "[0, 1)"),
    ("lm", ["model.wdrop=1"], "model.wdrop=1.0", "[0, 1)"),
    ("lm", ["model.noise_p=1.5"], "model.noise_p=1.5", "[0, 1]"),
    ("lm", ["model.tau=0"], "model.tau=0.0", "> 0"),
    ("lm", ["model.cell=gru"], "model.cell='gru'", "['lstm', 'sharpened', 'g2lstm']"),
    ("lm", ["model.noise_mode=word"], "model.noise_mode='word'", "['step', 'sequence', 'sequence_mask']"),
    ("lm", ["data.source=xyz"], "data.source='xyz'", "data=<bible|brown|ptb|wikitext2|text>"),
    ("lm", ["data.valid_books=[70]"], "data.valid_books=[70]", "1..66"),
    ("lm", ["data.train_books=[5, 6]"], "data.train_books=[5, 6]", "books not also in data.valid_books or data.test_books"),
    ("lm", ["data.train_books=[]"], "data.train_books=[]", "a non-empty list of Bible book numbers"),
    ("lm", ["train.patience=0"], "train.patience=0", "> 0"),
    ("lm", ["train.min_delta=-0.1"], "train.min_delta=-0.1", ">= 0"),
    ("lm", ["model.eval_gates=firm"], "model.eval_gates='firm'", "['soft', 'hard']"),
    ("lm", ["data=brown", "data.valid_words=0"], "data.valid_words=0", "> 0"),
    ("lm", ["data=text"], "data.path=None", "the folder of the text files"),
    ("lm", ["eval.cache.lambdahs=[2]"], "eval.cache.lambdahs=[2.0]", "probabilities in [0, 1]"),
    ("lm", ["device=gpu"], "device='gpu'", "a torch device"),
    ("lm", ["threads=0"], "threads=0", "> 0"),
    ("mt", ["model.hidden_dim=7"], "model.hidden_dim=7", "even"),
    ("mt", ["model.tau=-1"], "model.tau=-1.0", "> 0"),
    ("mt", ["model.attention=luong"], "model.attention='luong'", "['dot', 'general', 'bahdanau']"),
    ("mt", ["train.label_smoothing=1"], "train.label_smoothing=1.0", "[0, 1)"),
    ("mt", ["train.max_tokens=0"], "train.max_tokens=0", "> 0"),
    ("mt", ["train.select_by=acc"], "train.select_by='acc'", "['loss', 'bleu']"),
    ("mt", ["eval.beam=0"], "eval.beam=0", "> 0"),
    ("mt", ["data.name=xyz"], "data.name='xyz'", "['multi30k', 'folder', 'iwslt_raw', 'bible']"),
    ("mt", ["+data.options.year=14"], "data.options={'year': 14}", "options of corpus 'multi30k' among []"),
    ("mt", ["data=iwslt14_raw"], "data.path=None", "the folder of the 'iwslt_raw' corpus"),
    ("mt", ["data.tokenizer.model_type=wordpiece"], "data.tokenizer.model_type='wordpiece'", "'bpe'"),
    ("mt", ["data.filter.max_len=0"], "data.filter.max_len=0", ">= min_len"),
    ("mt", ["train.schedules.tau={end: 0.1, steps: 0, shape: exponential}"],
     "train.schedules.tau={'end': 0.1, 'steps': 0, 'shape': 'exponential'}", "{end, steps > 0, shape in"),
    ("lm", ["train.divergence_factor=0.5"], "train.divergence_factor=0.5", "a factor > 1"),
    ("paper", ["tasks=[xx]"], "tasks=['xx']", "['lm', 'mt', 'classify', 'translit']"),
    ("paper", ["models=[gru]"], "models=['gru']", "model kinds"),
    ("paper", ["lm.gates=[in]"], "lm.gates=['in']", "['input', 'forget', 'output']"),
    ("classify", ["train.batch_size=0"], "train.batch_size=0", "> 0"),
    ("classify", ["model.pooling=attention"], "model.pooling='attention'", "['last', 'mean', 'max', 'none']"),
    ("classify", ["model.dropout=1"], "model.dropout=1.0", "[0, 1)"),
    ("classify", ["data.out_of_domain=[imdb]"], "data.out_of_domain=['imdb']", "out-of-domain sets among"),
    ("classify", ["train.saturation_examples=0"], "train.saturation_examples=0", "> 0"),
    ("classify", ["train.saturation_every=0"], "train.saturation_every=0", "> 0, or null"),
    ("translit", ["data.train_books=[43]"], "data.train_books=[43]", "not also in data.valid_books or data.test_books"),
    ("translit", ["data.schemas=[latin]"], "data.schemas=['latin']", "romanisation schemas among"),
    ("translit", ["data.max_chars=0"], "data.max_chars=0", "> 0"),
    ("translit", ["model.cell=gru"], "model.cell='gru'", "['lstm', 'sharpened', 'g2lstm']"),
    ("translit", ["train.valid_pieces=0"], "train.valid_pieces=0", "> 0, or null"),
    ("translit", ["train.schedules.noise_p={end: 0, steps: 10, shape: cosine}"],
     "train.schedules.noise_p={'end': 0, 'steps': 10, 'shape': 'cosine'}", "{end, steps > 0, shape in"),
    ("interpret", ["rnnvis.mode=both"], "rnnvis.mode='both'", "['positive', 'negative', 'absolute']"),
    ("interpret", ["rnnvis.view_states=[c]", "rnnvis.states=[h]"], "rnnvis.view_states=['c']", "states also in rnnvis.states"),
    ("interpret", ["neurons.internals=[x]"], "neurons.internals=['x']", "recorded internals among"),
    ("interpret", ["neurons.alpha=0"], "neurons.alpha=0.0", "(0, 1]"),
    ("interpret", ["attribution.n_steps=0"], "attribution.n_steps=0", "> 0"),
    ("interpret", ["max_texts=0"], "max_texts=0", "> 0"),
    ("interpret", ["attribution.n_steps=16", "attribution.max_steps=8"], "attribution.max_steps=8", ">= n_steps (16)"),
    ("interpret", ["attribution.tolerance=0"], "attribution.tolerance=0.0", "> 0"),
    ("interpret", ["explore.budget_mb=inf"], "explore.budget_mb=inf", "a finite value > 0"),
    ("interpret", ["explore.tracked=-1"], "explore.tracked=-1", ">= 0, or null"),
    ("interpret", ["explore.bits16=[q]"], "explore.bits16=['q']", "fields among"),
    ("interpret", ["explore.rnnvis.states=[x]"], "explore.rnnvis.states=['x']", "recorded states among"),
    ("interpret", ["explore.rnnvis.clusters=0"], "explore.rnnvis.clusters=0", "> 0"),
    # values the schemas used to accept and the trainers then crashed on or misread (docs/reliability.md)
  # (root, overrides, message start, what is expected)
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


@pytest.mark.parametrize("root, overrides, start, expected", OUT_OF_RANGE)
def test_an_impossible_value_names_the_key_the_value_and_the_range(root, overrides, start, expected):
    with pytest.raises(ConfigValueError) as error:
        compose_config(root, overrides)
    message = str(error.value)
    assert message.startswith(f"{start}: expected ") and expected in message


def _documented_commands():
    """Every train_lm / train_mt / train_classifier / train_translit / paper_table / interpret
    command of the guides and result READMEs, as ``(root, overrides)``: placeholders filled, sweeps
    at their first value, hydra.* dropped."""
    roots = {"train_lm": "lm", "train_mt": "mt", "train_classifier": "classify", "train_translit": "translit",
             "paper_table": "paper", "interpret": "interpret"}
    docs = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("results/*/README.md"), ROOT / "results/paper/table.md"]
    commands = set()
    for doc in docs:
        text = doc.read_text(encoding="utf-8").replace("\\\n", " ")
        for script, args in re.findall(r"python3? experiments/(" + "|".join(roots) + r")\.py([^`\n|#&;]*)", text):
            for placeholder, value in (("${rnn}", "lstm"), ("$rnn", "lstm"), ("${cell}", "lstm"), ("$cell", "lstm"),
                                       ("${seed}", "1"), ("$seed", "1"), ("$s", "1"), ("${c}", "lstm"), ("$c", "lstm"), ("$k", "lstm"),
                                       ("$L", "runs")):
                args = args.replace(placeholder, value)
            words = [w for w in shlex.split(args) if w != "-m" and not w.startswith("hydra.")]
            if any(w.startswith(("<", "[")) or "..." in w or "=" not in w for w in words):
                continue  # a pattern, not a command
            words = [w if "[" in w or " " in w else w.split(",")[0] for w in words]  # a sweep: its first value
            commands.add((roots[script], tuple(words)))
    # one command per set of keys and group choices (composing takes 0.2 s each)
    groups = {"experiment", "data", "model", "train", "eval", "lm", "mt", "classify", "translit"}
    distinct = {}
    for root, words in sorted(commands):
        keys = frozenset(w if w.split("=")[0] in groups else w.split("=")[0] for w in words)
        distinct.setdefault((root, keys), (root, words))
    return sorted(distinct.values())


ROOTS = ("lm", "mt", "classify", "translit", "paper", "interpret")


@pytest.mark.slow
def test_every_documented_command_and_experiment_composes_and_validates():
    commands = _documented_commands()
    assert len(commands) > 10
    assert {root for root, _ in commands} == set(ROOTS)  # the commands of every root's guide are read
    experiments = [(root, (f"experiment={p.stem}",)) for root in ROOTS
                   for p in (CONF_ROOT / root / "experiment").glob("*.yaml")]
    chosen = {(root, w) for root, words in commands + experiments for w in words}  # group options already met
    chosen |= {(root, f"{group}={option}") for root in ROOTS
               for path in (CONF_ROOT / root).glob("**/*.yaml")
               for group, option in re.findall(r"^  - (?:override /)?(\w+): (\w+)", path.read_text(), re.M)}
    groups = [(root, (f"{p.parent.name}={p.stem}",) + (("data.path=/x",) if p.stem in ("text", "iwslt14_raw") else ()))
              for root in ROOTS for p in (CONF_ROOT / root).glob("*/*.yaml")
              if p.parent.name != "experiment" and (root, f"{p.parent.name}={p.stem}") not in chosen]
    for root in ROOTS:  # one Hydra initialisation per root: compose_config's steps
        register_schemas(root)
        with initialize_config_dir(config_dir=str(config_dir(root)), version_base="1.3"):
            for _, overrides in [c for c in commands + experiments + groups if c[0] == root]:
                validate(compose("config", overrides=list(overrides)))  # raises on any problem


def test_accepted_configs_compose_to_the_values_they_had():
    """Typed schemas keep what the YAML files say (ints in float keys compare equal)."""
    cfg = compose_config("lm", ["experiment=brown_cpu"])
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.max_minutes, cfg.model.nhid) == (20, 20, None, 256)
    assert cfg.data.source == "brown" and cfg.data.train_words == 800_000
    cfg = compose_config("mt", ["experiment=multi30k_cpu"])
    assert (cfg.train.max_epochs, cfg.train.max_minutes, cfg.model.hidden_dim, cfg.data.tokenizer.vocab_size) == (10, 90, 256, 4000)
    assert dict(cfg.data.splits) == {"train": "train", "valid": "val", "test": "test_2016_flickr"}
    cfg = compose_config("classify", ["experiment=rt_small"])
    assert (cfg.train.lr, cfg.train.max_epochs, cfg.train.saturation_every, cfg.model.hidden_dim) == (0.003, 1, 50, 64)
    assert list(cfg.data.out_of_domain) == ["tweets", "amazonReviewSnippets", "nytEditorialSnippets"]
    cfg = compose_config("translit", ["experiment=nt_small"])
    assert (cfg.train.valid_pieces, cfg.train.eval_every, cfg.model.embed_dim, cfg.data.train_books[0]) == (300, 40, 16, 45)
    cfg = compose_config("interpret")
    assert (cfg.attribution.position, cfg.rnnvis.mode, list(cfg.neurons.internals), cfg.information.lam) == (
        -2, "positive", ["i", "f", "o", "g", "c", "h"], 0.1)


# ----------------------------------------------------------------------------- trainers and entry points


def test_a_trainer_given_a_plain_dict_checks_it_before_touching_the_run_folder(tiny_mt_config, run_folder):
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(tiny_mt_config(), resolve=True)
    cfg["model"]["hidden_dim"] = 7
    before = snapshot(run_folder)
    with pytest.raises(ConfigValueError, match=r"^model\.hidden_dim=7: expected an even size"):
        train_mt(cfg, run_folder)
    cfg["model"]["hidden_dim"] = "abc"
    with pytest.raises(ConfigError, match="model.hidden_dim"):
        train_mt(cfg, run_folder)
    assert snapshot(run_folder) == before


def test_the_classify_and_translit_trainers_check_a_plain_dict_before_reading_data(run_folder):
    before = snapshot(run_folder)
    for root, trainer in (("classify", train_classifier), ("translit", train_translit)):
        cfg = OmegaConf.to_container(compose_config(root), resolve=True)
        cfg["model"]["dropout"] = 1.0
        with pytest.raises(ConfigValueError, match=r"^model\.dropout=1\.0: expected a dropout probability"):
            trainer(cfg, run_folder)
        cfg["model"]["dropout"], cfg["train"]["saturation_example"] = 0.5, 10  # a misspelt key
        with pytest.raises(ConfigError, match="saturation_example"):
            trainer(cfg, run_folder)
    assert snapshot(run_folder) == before


@pytest.mark.slow
@pytest.mark.parametrize("script, override", [("train_lm", "train.batch_size=0"), ("train_classifier", "train.batch_size=0")])
def test_the_hydra_entry_point_refuses_a_bad_value_without_a_traceback_or_writing(run_folder, script, override):
    before = snapshot(run_folder)
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / f"{script}.py"), override,
                           f"hydra.run.dir={run_folder}"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 1
    assert f"{override}: expected a value > 0" in done.stderr and "Traceback" not in done.stderr
    assert snapshot(run_folder) == before


def test_interpret_refuses_a_bad_value_before_loading_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exit_:  # the checkpoint does not exist: the config is checked first
        interpret([f"checkpoints=[{tmp_path}/missing.pt]", f"out_dir={out}", "rnnvis.mode=both"])
    assert str(exit_.value).startswith("Error in the config: rnnvis.mode='both': expected one of")
    assert not out.exists()


def test_lm_resume_with_another_batch_size_is_refused_naming_the_key(tiny_lm_config, tmp_path):
    train_lm(tiny_lm_config("train.max_steps=2"), tmp_path / "run")
    before = snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match=r"train\.batch_size: 4 in the checkpoint, 6 now"):
        train_lm(tiny_lm_config("train.max_steps=3", "train.batch_size=6"), tmp_path / "run")
    assert snapshot(tmp_path / "run") == before


# ----------------------------------------------------------------------------- readers


def test_invalid_utf8_names_the_file_line_and_column(tmp_path):
    bad = b"good line\nok\nbad \xff here\n"
    plain = tmp_path / "train.txt"
    plain.write_bytes(bad)
    with pytest.raises(ValueError, match=re.escape(f"{plain}:3: not valid UTF-8 (byte 0xff at column 5)")):
        read_text_file(plain)
    packed = tmp_path / "train.de.gz"
    packed.write_bytes(gzip.compress(bad))
    with pytest.raises(ValueError, match=re.escape(f"{packed}:3: not valid UTF-8 (byte 0xff at column 5)")):
        read_lines(packed)
    brown = tmp_path / "brown"
    brown.mkdir()
    (brown / "ca01").write_bytes(b"The/at dog/nn\nran/vbd \xc3(/x\n")
    with pytest.raises(ValueError, match=re.escape(f"{brown / 'ca01'}:2: not valid UTF-8 (byte 0xc3 at column 9)")):
        read_brown(brown)


def test_parallel_files_of_different_lengths_are_named(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("one\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'a.de'} has 2, {tmp_path / 'a.en'} has 1")):
        read_parallel(tmp_path / "a.de", tmp_path / "a.en")


def test_an_empty_lm_split_is_named_with_its_file(tmp_path):
    for name, text in (("train.txt", "a b c\n"), ("valid.txt", "\n\n"), ("test.txt", "d e\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'valid.txt'}: the valid split is empty")):
        load_corpus("text", str(tmp_path), files=["train.txt", "valid.txt", "test.txt"])
    brown = tmp_path / "brown"
    brown.mkdir()
    (brown / "ca01").write_text("The/at dog/nn ran/vbd\n", encoding="utf-8")
    with pytest.raises(ValueError, match="the valid split of source 'brown' is empty.*data.valid_words"):
        load_corpus("brown", str(brown), train_words=100, valid_words=100)


def test_an_empty_mt_split_is_named_by_role_split_and_path(tiny_mt_config, mt_corpus):
    for side in ("de", "en"):
        (mt_corpus / f"valid.{side}").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"the valid split (data.splits.valid='valid', data.name=folder, "
                                                   f"data.path={mt_corpus}) has no sentence pairs")):
        build_data(tiny_mt_config())
    with pytest.raises(ValueError, match=r"the train split \(data.splits.train='train'.* has no sentence pairs left after data.filter"):
        build_data(tiny_mt_config("data.filter.min_len=50", "data.filter.max_len=60"))


# ----------------------------------------------------------------------------- checkpoints


def _mt_checkpoint(path: Path, pairs) -> Path:
    """A small (untrained) translation checkpoint as the trainer writes it."""
    tokenizers = train_tokenizers(pairs * 4, vocab_size=60)
    model = Seq2Seq(ModelConfig(embed_dim=8, hidden_dim=8), tokenizers.src.vocab_size, tokenizers.tgt.vocab_size)
    runtime.save_checkpoint({"task": "mt", "config": {"model": {"cell": "lstm"}}, "model": model.state_dict(),
                             "model_config": model.config_dict(), "tokenizers": tokenizers.state()}, path)
    return path


@pytest.mark.parametrize("content, message", [
    (b"", "is an empty file (0 bytes), not a checkpoint"),
    ("truncated", "is not a readable checkpoint"),
    (b"step,loss\n1,2.0\n", "is not a readable checkpoint"),
    ("tensor", "holds a Tensor, not a g2lstm checkpoint"),
])
def test_an_unreadable_checkpoint_names_the_path_and_the_way_on(tmp_path, mt_pairs, content, message):
    path = tmp_path / "best.pt"
    if content == "truncated":
        whole = _mt_checkpoint(tmp_path / "whole.pt", mt_pairs).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif content == "tensor":
        torch.save(torch.zeros(2), path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        g2lstm.load(path)
    text = str(error.value)
    assert text.startswith(str(path)) and message in text and "train.resume=false" in text


def test_a_damaged_last_checkpoint_stops_resume_before_anything_is_written(tiny_mt_config, run_folder):
    (run_folder / "last.pt").write_bytes(b"")
    before = snapshot(run_folder)
    with pytest.raises(CheckpointError, match=re.escape(f"{run_folder / 'last.pt'} is an empty file")):
        train_mt(tiny_mt_config(), run_folder)
    assert snapshot(run_folder) == before


def test_a_checkpoint_of_another_task_is_refused_by_name(tmp_path):
    lm = tmp_path / "lm.pt"
    runtime.save_checkpoint({"task": "lm", "config": {}, "model": {}, "vocab": ["<eos>", "<unk>"]}, lm)
    with pytest.raises(ValueError, match=re.escape(f"{lm} is a checkpoint of task 'lm', expected a 'mt' checkpoint")):
        translate_main([str(lm), "--input", str(lm)])


def test_a_failed_save_names_the_path_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    runtime.save_checkpoint({"step": 1}, path)
    before = path.read_bytes()

    def full_disk(state, f):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:783] . unexpected pos 38720 vs 38614")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=re.escape(f"could not write the checkpoint {path} (")) as error:
        runtime.save_checkpoint({"step": 2}, path)
    assert "the previous last.pt is kept" in str(error.value)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    monkeypatch.setattr(torch, "save", lambda state, f: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(CheckpointError, match=re.escape(f"could not write the checkpoint {tmp_path / 'new.pt'} ([Errno 28]")):
        runtime.save_checkpoint({"step": 2}, tmp_path / "new.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ----------------------------------------------------------------------------- translate.py


@pytest.mark.parametrize("reference, count", [("", 0), ("a man rides a bike .\n", 1)])
def test_translate_with_an_empty_or_short_reference_says_what_it_expected(tmp_path, mt_pairs, reference, count):
    checkpoint = _mt_checkpoint(tmp_path / "best.pt", mt_pairs)
    source = tmp_path / "in.de"
    source.write_text("ein hund läuft .\nzwei frauen lesen .\n", encoding="utf-8")
    ref = tmp_path / "ref.en"
    ref.write_text(reference, encoding="utf-8")
    args = [str(checkpoint), "--input", str(source), "--output", str(tmp_path / "out.en"), "--greedy",
            "--max-len-b", "2", "--reference", str(ref)]
    with pytest.raises(ValueError, match=re.escape(f"--reference {ref} has {count} lines; expected one reference "
                                                   "for each of the 2 input lines")):
        translate_main(args)
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "translate.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120) if count == 0 else None
    if done is not None:  # the command line prints the message alone
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert f"translate.py: error: --reference {ref} has 0 lines" in done.stderr
