"""The package's command-line entry points: console scripts after ``pip install`` (pyproject.toml
``[project.scripts]``) and the bodies of the thin ``experiments/*.py`` wrappers in a checkout.

    g2lstm-train-lm [key=value ...]        # = python experiments/train_lm.py (config g2lstm/conf/lm)
    g2lstm-train-mt [key=value ...]        # = python experiments/train_mt.py (config g2lstm/conf/mt)
    g2lstm-translate CKPT --input F        # = python experiments/translate.py
    g2lstm-paper-table [key=value ...]     # = python experiments/paper_table.py (config g2lstm/conf/paper)
    g2lstm-interpret checkpoints=[A,B] ... # = python experiments/interpret.py (config g2lstm/conf/interpret)
    g2lstm-explore checkpoints=[A,B] ...   # = python experiments/explore.py (config g2lstm/conf/explore)
    g2lstm-export CKPT OUT --method M ...  # = python experiments/export_checkpoint.py (a compressed file to ship)

The Hydra configs ship inside the package (``g2lstm/conf``), so the commands work outside a
checkout; run folders, data and result paths are relative to the current directory.
"""

import argparse
import functools
import io
import shlex
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

# imported here, not in the functions: importing a trainer registers its config schemas, which
# Hydra needs before it composes the config
from g2lstm.config import CONF_ROOT, ConfigError, ConfigValueError, compose_config
from g2lstm.data import checked_text, read_text
from g2lstm.data.mt import read_lines, refuse_blank_lines
from g2lstm.lm.train import train as train_lm_run
from g2lstm.mt.decode import translate as translate_lines
from g2lstm.mt.evaluate import score
from g2lstm.mt.train import load_model, train as train_mt_run
from g2lstm.classify.train import train as train_classifier_run
from g2lstm.translit.train import train as train_translit_run
from g2lstm.paper import PaperTask, run_task
from g2lstm.report import write_table
from g2lstm.train import CheckpointError, NonFiniteLossError

# The package's own errors: bad input, refused runs, a diverged training. An entry point ends on them
# with their message on one line (exit code 1); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, KeyError, OSError, CheckpointError, NonFiniteLossError)


def one_line(error: BaseException) -> str:
    """An error's message on one line (a multi-line message's lines joined)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def exits_on_user_errors(main):
    """An entry point's body: the package's own errors (:data:`USER_ERRORS`) end the program with
    ``error: <message>`` on one line of stderr and exit code 1, and a run folder that Hydra made
    for the failed command and that is still empty is removed. Python callers get the exceptions
    themselves: of the functions below the entry points (``g2lstm.lm.train.train``, ...), and of
    an argv-style entry point given its ``argv`` (``interpret(["checkpoints=[...]"])``)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        from_python = bool(args) and isinstance(args[0], list) or kwargs.get("argv") is not None
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as error:
            if from_python:
                raise
            if HydraConfig.initialized():
                _remove_if_empty(Path(HydraConfig.get().runtime.output_dir))
            sys.exit(f"error: {one_line(error)}")

    return wrapper


def _remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` and then its parent (Hydra's date folder) while they are empty."""
    for path in (folder, folder.parent):
        if path.is_dir() and path.resolve() != Path.cwd().resolve() and not any(path.iterdir()):
            path.rmdir()


# an absolute folder: Hydra would read a relative one as a module path (pkg://g2lstm.conf.lm)
@hydra.main(config_path=str(CONF_ROOT / "lm"), config_name="config", version_base="1.3")
@exits_on_user_errors
def train_lm(cfg: DictConfig) -> dict:
    """Train and evaluate a word-level language model (see docs/lm.md)."""
    hydra_cfg = HydraConfig.get()
    result = train_lm_run(cfg, hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task))
    if result["stopped"] == "max_steps":
        print(f"stopped at step {result['steps']} (train.max_steps); resume with hydra.run.dir={result['run_dir']}")
        return result
    print(f"valid perplexity {result['valid_ppl']:.2f}")
    print(f"test perplexity {result['test_ppl']:.2f}")
    if result["cache"]:
        c = result["cache"]
        print(f"with cache pointer (window {c['window']}, theta {c['theta']}, lambda {c['lambdah']}): "
              f"valid {c['valid_ppl']:.2f}, test {c['test_ppl']:.2f}")
    print(f"run folder: {result['run_dir']} (config.yaml, metrics.jsonl, last.pt, best.pt, results.json)")
    return result


@hydra.main(config_path=str(CONF_ROOT / "mt"), config_name="config", version_base="1.3")
@exits_on_user_errors
def train_mt(cfg: DictConfig) -> float | None:
    """Train a translation model; returns its test BLEU (see docs/mt.md)."""
    hydra_cfg = HydraConfig.get()
    return train_mt_run(cfg, hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task)).get("bleu")


@hydra.main(config_path=str(CONF_ROOT / "classify"), config_name="config", version_base="1.3")
@exits_on_user_errors
def train_classifier(cfg: DictConfig) -> float | None:
    """Train a sentence-polarity classifier; returns its test accuracy (see docs/tasks.md)."""
    hydra_cfg = HydraConfig.get()
    return train_classifier_run(cfg, hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task)).get("accuracy")


@hydra.main(config_path=str(CONF_ROOT / "translit"), config_name="config", version_base="1.3")
@exits_on_user_errors
def train_translit(cfg: DictConfig) -> float | None:
    """Train a Latin -> Cyrillic transliterator; returns its test word accuracy (see docs/tasks.md)."""
    hydra_cfg = HydraConfig.get()
    return train_translit_run(cfg, hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task)).get("word_accuracy")


TRANSLATE_HELP = """Translate a file with a trained checkpoint, one sentence a line (plain or .gz), in order.

    g2lstm-translate runs/mt/<run>/best.pt --input test.de --output test.hyp
    g2lstm-translate runs/mt/<run>/best.pt --input test.de.gz --reference test.en.gz
    g2lstm-translate CKPT --greedy < in.de > out.en

Empty lines translate to empty lines; lines longer than --max-src-tokens subwords are cut (with a
warning). With --reference, prints sacreBLEU and chrF (with their signatures) and tokenized BLEU;
a blank line in the input or the reference is then refused (file:line), since it would be scored.
--output may not be the checkpoint, the input or the reference.
"""


def translate(argv: list[str] | None = None) -> None:
    """Translate a file with a trained checkpoint (g2lstm-translate --help)."""
    try:
        translate_file(argv)
    except (ValueError, FileNotFoundError, CheckpointError) as error:  # bad input: the message, no traceback
        sys.exit(f"{Path(sys.argv[0]).name}: error: {error}")


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0 (argparse prints the error with the option's name)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {value}")
    return value


def _refuse_overwriting(output: str | None, inputs: dict[str, str | None]) -> None:
    """``--output`` must not be one of the files read: it would be truncated before it is read, or
    a checkpoint replaced by translations."""
    if output is None:
        return
    target = Path(output).resolve()
    for option, path in inputs.items():
        if path is not None and (Path(path).resolve() == target
                                 or target.exists() and Path(path).exists() and target.samefile(path)):
            raise ValueError(f"--output {output} is the {option} {path}; expected another file (it would be "
                             "overwritten)")


def translate_file(argv: list[str] | None = None) -> None:
    """:func:`translate` raising its errors (for use from Python)."""
    p = argparse.ArgumentParser(description=TRANSLATE_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="best.pt or last.pt of a training run")
    p.add_argument("--input", help="source file (plain or .gz); default stdin")
    p.add_argument("--output", help="where to write translations; default stdout")
    p.add_argument("--reference", help="reference file: print BLEU, chrF and tokenized BLEU")
    p.add_argument("--beam", type=positive_int, default=5)
    p.add_argument("--greedy", action="store_true", help="greedy decoding (same as --beam 1)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="score / length**this")
    p.add_argument("--max-len-a", type=float, default=2.0, help="output <= a * source length + b")
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--max-src-tokens", type=positive_int, default=250, help="longer source lines are cut")
    p.add_argument("--max-tokens", type=positive_int, default=4000, help="source tokens per batch, shared by the beams")
    p.add_argument("--tokenized-bleu", default="13a", choices=["13a", "none"],
                   help="tokenization before tokenized BLEU ('none' for pre-tokenized data)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=positive_int, default=1)
    args = p.parse_args(argv)

    _refuse_overwriting(args.output, {"checkpoint": args.checkpoint, "--input": args.input,
                                      "--reference": args.reference})
    torch.set_num_threads(args.threads)
    model, tokenizers, _ = load_model(args.checkpoint, args.device)
    if args.input:
        sources = read_lines(args.input)
    else:  # as read_lines reads a file
        sources = [line.rstrip("\r\n") for line in io.StringIO(checked_text(sys.stdin.read(), "<stdin>"), newline="\n")]
    references = None
    if args.reference:  # read before the output is written; scored pairs may not be blank
        references = read_lines(args.reference)
        if not references or len(references) != len(sources):
            raise ValueError(f"--reference {args.reference} has {len(references)} lines; expected one reference "
                             f"for each of the {len(sources)} input lines (and at least one)")
        refuse_blank_lines([(s.strip(), r.strip()) for s, r in zip(sources, references)],
                           args.input or "<stdin>", args.reference, *[range(1, len(sources) + 1)] * 2)
    hyps = translate_lines(model, tokenizers, sources, beam=1 if args.greedy else args.beam,
                           length_penalty=args.length_penalty, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                           max_src_tokens=args.max_src_tokens, max_tokens=args.max_tokens)
    text = "".join(h + "\n" for h in hyps)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if references is not None:
        s = score(hyps, references, tokenized=args.tokenized_bleu)
        print(f"BLEU {s['bleu']:.2f}  chrF {s['chrf']:.2f}  tokenized BLEU {s['tok_bleu']:.2f}", file=sys.stderr)
        print(f"{s['bleu_signature']}\n{s['chrf_signature']}", file=sys.stderr)


EXPORT_HELP = """Write a checkpoint as one compressed file to ship: its input- and forget-gate blocks (or
--gates) stored as packed codes, everything else in float32 (or --rest-dtype float16). g2lstm.load
(and every command that takes a checkpoint) reads the file; see docs/compression.md.

    g2lstm-export runs/lm/<run>/best.pt lm_round_clip.pt --method round_clip --precision 0.2 --clip 0.4
    g2lstm-export runs/mt/<run>/best.pt mt_4bit.pt --method quantize --bits 4 --evaluate
    g2lstm-export best.pt small.pt --method round_relative --precision 1 --clip 2 --rest-dtype float16

Prints the file's size against the checkpoint's and, with --evaluate, the task's test metric of
both (the task's default evaluation: e.g. the whole test split).
"""


@exits_on_user_errors
def export_checkpoint(argv: list[str] | None = None) -> dict:
    """A compressed export of a checkpoint (g2lstm-export --help); returns :func:`g2lstm.compress.export`'s
    sizes, with ``before`` and ``after`` (the test metric) given ``--evaluate``."""
    from g2lstm import load
    from g2lstm.compress import GATE_NAMES, PACKED_METHODS, REST_DTYPES, export

    p = argparse.ArgumentParser(prog="g2lstm-export", description=EXPORT_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="best.pt or last.pt of a training run (of any task)")
    p.add_argument("output", help="the file to write (atomically)")
    p.add_argument("--method", choices=PACKED_METHODS, help="the compression (none: nothing packed)")
    p.add_argument("--precision", type=float, help="round*: the grid step (round_relative: in block stds)")
    p.add_argument("--clip", type=float, help="round_clip, round_relative: clip to [-clip, clip]")
    p.add_argument("--bits", type=int, help="quantize: bits per code, 2 to 8 (default 8)")
    p.add_argument("--gates", nargs="+", choices=GATE_NAMES, default=["input", "forget"])
    p.add_argument("--rest-dtype", choices=REST_DTYPES, default="float32", help="of every tensor not packed")
    p.add_argument("--evaluate", action="store_true", help="print the test metric of the checkpoint and the file")
    p.add_argument("--threads", type=positive_int, default=1)
    args = p.parse_args(argv)
    if Path(args.output).resolve() == Path(args.checkpoint).resolve():
        raise ValueError(f"the output {args.output} is the checkpoint; expected another file (it would be replaced)")
    torch.set_num_threads(args.threads)
    options = {k: getattr(args, k) for k in ("precision", "clip", "bits") if getattr(args, k) is not None}
    sizes = export(args.checkpoint, args.output, args.method, gates=args.gates, rest_dtype=args.rest_dtype, **options)
    line = f"wrote {args.output}: {sizes['bytes']:,} bytes, x{sizes['bytes'] / sizes['checkpoint_bytes']:.3f} of " \
           f"{args.checkpoint} ({sizes['checkpoint_bytes']:,} bytes)" if sizes["checkpoint_bytes"] else \
           f"wrote {args.output}: {sizes['bytes']:,} bytes"
    if sizes["blocks"]:
        line += (f"; {sizes['blocks']} gate blocks: {sizes['blocks_packed_bytes']:,} bytes packed, "
                 f"x{sizes['blocks_packed_bytes'] / sizes['blocks_float32_bytes']:.3f} of float32")
    print(line, flush=True)
    if args.evaluate:
        original, shipped = load(args.checkpoint), load(args.output)
        sizes["before"], sizes["after"] = original.evaluate(), shipped.evaluate()
        print(f"{original.task} test metric: {sizes['before']:.4f} (checkpoint), {sizes['after']:.4f} (export), "
              f"change {sizes['after'] - sizes['before']:+.4f}", flush=True)
    return sizes


def compose_or_exit(root: str, argv: list[str]) -> DictConfig:
    """``compose_config(root, argv)`` for a command without Hydra's main: a bad config ends the
    program with its message (exit code 1), as the Hydra entry points' ``ValidateConfig`` does."""
    try:
        return compose_config(root, argv)
    except (ConfigError, ConfigValueError) as error:
        sys.exit(f"Error in the config: {error}")


@exits_on_user_errors
def paper_table(argv: list[str] | None = None) -> None:
    """The paper's compression table (see g2lstm/paper.py and docs/compression.md); ``out_dir``,
    ``runs_dir`` and checkpoints are relative to the current directory."""
    argv = sys.argv[1:] if argv is None else argv
    cfg = compose_or_exit("paper", argv)
    torch.set_num_threads(int(cfg.threads))
    root = Path.cwd()
    out_dir = root / cfg.out_dir
    command = ("python experiments/paper_table.py " + " ".join(map(shlex.quote, argv))).strip()
    for key in cfg.tasks:
        task = PaperTask(key, cfg[key], root / cfg.runs_dir, cfg.seed, root=root)
        run_task(task, cfg, list(cfg.models), out_dir / (cfg[key].folder or key), command, merge=cfg.merge)
        print(write_table(out_dir), flush=True)


def text_lines(path: str) -> list[str]:
    """The non-blank lines of interpret's ``texts=`` file; a missing or empty file (or one that is
    not UTF-8 text) is an error naming the key and the path."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"texts={path}: no such file; expected a UTF-8 text file, one text a line")
    text = read_text(path, "texts=: a UTF-8 text file, one text a line")
    lines = [line.rstrip("\n") for line in io.StringIO(text, newline=None) if line.strip()]
    if not lines:
        raise ValueError(f"texts={path}: the file holds no text (no non-blank line); expected one text a line")
    return lines


def check_report_paths(cfg: DictConfig) -> None:
    """What interpret reads and writes besides the checkpoints, checked before they are loaded."""
    if Path(cfg.out_dir).exists() and not Path(cfg.out_dir).is_dir():
        raise ValueError(f"out_dir={cfg.out_dir}: is a file; expected a folder for the report (made if missing)")
    if cfg.texts is not None:
        text_lines(cfg.texts)


def read_texts(loaded, path: str | None, count: int) -> tuple[list, list | None]:
    """``(texts, references)``: ``count`` lines of ``path`` (MT: ``source<TAB>target``) and no
    references, or the run's test split as the explorer reads it
    (:func:`g2lstm.explore.texts.split_texts`: with the gold labels or output symbols)."""
    from g2lstm.explore.texts import split_texts

    if path is not None:
        lines = text_lines(path)
        texts = [tuple(line.split("\t", 1)) if loaded.task == "mt" and "\t" in line else line for line in lines]
        return texts[:count], None
    return split_texts(loaded, "test", count)


@exits_on_user_errors
def interpret(argv: list[str] | None = None) -> None:
    """The interpretability report on trained models of one task, side by side (docs/interpret.md):
    ``out_dir/report.md``, ``report.json`` and the explorer page ``explore.html``; paths are
    relative to the current directory."""
    from g2lstm.interpret.report import write_report
    from g2lstm.tasks import load

    argv = sys.argv[1:] if argv is None else argv
    cfg = compose_or_exit("interpret", argv)
    try:
        check_report_paths(cfg)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"Error in the config: {error}")
    if not cfg.checkpoints:
        raise ValueError("checkpoints is empty: pass checkpoints=[path/best.pt,...]")
    torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    loaded = [load(path) for path in cfg.checkpoints]
    names = list(cfg.names) if cfg.names else [m.config["model"]["cell"] for m in loaded]
    if len(names) != len(loaded) or len(set(names)) != len(names):
        raise ValueError(f"names must give a distinct label per checkpoint; got {names} for {len(loaded)} checkpoints")
    texts, references = read_texts(loaded[0], cfg.texts, int(cfg.max_texts))
    command = ("python experiments/interpret.py " + " ".join(map(shlex.quote, argv))).strip()
    report = write_report(dict(zip(names, loaded)), texts, Path(cfg.out_dir), cfg, command, references)
    print(f"wrote {report}")


@exits_on_user_errors
def explore(argv: list[str] | None = None) -> None:
    """The explorer page of trained models of one task, side by side (docs/explore.md): one offline
    HTML file at ``out``; paths are relative to the current directory."""
    from g2lstm.explore import build
    from g2lstm.explore.texts import read_text_file, split_texts
    from g2lstm.tasks import load

    argv = sys.argv[1:] if argv is None else argv
    cfg = compose_or_exit("explore", argv)
    if not cfg.checkpoints:
        raise ValueError("checkpoints is empty: pass checkpoints=[path/best.pt,...]")
    torch.set_num_threads(int(cfg.threads))
    loaded = [load(path) for path in cfg.checkpoints]
    names = list(cfg.names) if cfg.names else [m.config["model"]["cell"] for m in loaded]
    if len(names) != len(loaded) or len(set(names)) != len(names):
        raise ValueError(f"names must give a distinct label per checkpoint; got {names} for {len(loaded)} checkpoints")
    if cfg.texts is not None:
        texts, references = read_text_file(loaded[0].task, cfg.texts, int(cfg.max_texts)), None
    else:
        texts, references = split_texts(loaded[0], cfg.split, int(cfg.max_texts))
    a, i = cfg.attribution, cfg.information
    build(dict(zip(names, loaded)), texts, cfg.out, references=references, budget_mb=float(cfg.budget_mb),
          tracked=cfg.tracked, bits={f: 16 for f in cfg.bits16}, batch_size=int(cfg.batch_size),
          attribution_texts=int(a.texts), ig_steps=int(a.n_steps), ig_max_steps=int(a.max_steps),
          ig_tolerance=float(a.tolerance), ig_position=int(a.position), information_texts=int(i.texts),
          information_layers=str(i.layers), information_lam=float(i.lam), information_scale=float(i.scale),
          information_steps=int(i.steps), information_draws=int(i.draws), response_states=tuple(cfg.rnnvis.states),
          top_words=int(cfg.rnnvis.top_words), clusters=int(cfg.rnnvis.clusters), seed=int(cfg.seed))
