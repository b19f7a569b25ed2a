"""The paper's compression table in one command (Li et al. 2018, Table 3, on the data we have).

    nice -n 10 python experiments/paper_table.py [key=value ...]     (config: conf/paper)

For each task in ``tasks`` (Brown LM, Multi30k de-en MT) and each model kind in ``models``
(lstm, sharpened, g2lstm): train it with the task's own trainer (g2lstm.lm.train / g2lstm.mt.train)
unless a checkpoint is given or already trained in ``runs_dir``; evaluate it uncompressed and under
round, round & clip, SVD and a smaller-rank SVD of the input- and forget-gate weights (and int8);
collect its gate statistics. Writes, under ``out_dir``:

    <task>/results.json       values, changes, compression reports, gate saturation per model
    <task>/gates_<model>.json gate histograms (10 bins of width 0.1) per layer
    <task>/gate_averages_<model>.json  per-token average gates of the heatmap sentences
    <task>/histograms.png     input/forget gate histograms of the three models, per layer
    <task>/heatmap_<n>_<layer>.png  per-token average gates of the n-th test sentence
    table.md, table.csv       the table over every task whose results.json exists

``<task>`` is the task's ``folder`` (default: its key). With ``merge=true`` the models of an
existing ``<task>/results.json`` that are not in ``models`` are kept, so a model trained later can
be added without evaluating the others again; the plots are redrawn from all models' files.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from g2lstm import diagnostics  # noqa: E402
from g2lstm.compress import evaluate_under_compression, gate_weight_stats  # noqa: E402

COLUMNS = {"original": "Original", "round": "Round", "round_clip": "Round & clip", "svd": "SVD",
           "svd_small": "SVD+", "int8": "int8 (extra)", "round_relative": "Relative round & clip (extra)"}
MODEL_NAMES = {"lstm": "LSTM", "sharpened": "Sharpened sigmoid", "g2lstm": "G2-LSTM"}


def compose(config_dir: Path, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


# ----------------------------------------------------------------------------- tasks
# A task knows how to get a trained model of a kind, score it, and feed it data for the gates.


class LMTask:
    """Word-level language modelling; the value is test perplexity (lower is better)."""

    key, higher_is_better = "lm", False

    def __init__(self, cfg: DictConfig, runs_dir: Path, seed: int):
        self.cfg, self.runs_dir, self.seed = cfg, runs_dir, seed
        self._corpora: dict[str, object] = {}

    def model(self, kind: str):
        from g2lstm.lm.train import BEST, lm_config, load_model, train

        path = self.cfg.checkpoints.get(kind)
        if path is None:
            run_dir = self.runs_dir / f"lm_{kind}"
            path = run_dir / BEST
            if not (path.exists() and (run_dir / "done").exists()):
                overrides = list(self.cfg.train_overrides) + list(self.cfg.model_overrides.get(kind) or []) + [
                    f"model.rnn={kind}", f"seed={self.seed}"]
                train(lm_config(overrides), run_dir=run_dir)
                (run_dir / "done").write_text(" ".join(overrides))
        model, vocab, config = load_model(ROOT / path if not Path(path).is_absolute() else path)
        self.corpus = self._corpus(config, vocab)
        return model, str(path)

    def _corpus(self, config: dict, vocab):
        from g2lstm.lm.train import load_data

        key = json.dumps(config["data"], sort_keys=True) + str(len(vocab))
        if key not in self._corpora:
            self._corpora[key] = load_data(OmegaConf.create(config["data"]), vocab=vocab)
        return self._corpora[key]

    @torch.no_grad()  # perplexity() keeps every chunk's log-probabilities: with grad, their graphs too
    def evaluate(self, model) -> float:
        from g2lstm.lm.evaluate import perplexity

        test = self.corpus.test[: self.cfg.test_tokens] if self.cfg.test_tokens else self.corpus.test
        return perplexity(model, test, self.cfg.eval_batch_size, self.cfg.bptt)["ppl"]

    def gate_stats(self, model):
        from g2lstm.data.lm import batchify

        ids = self.corpus.test[: self.cfg.diagnostics.tokens + 1]
        data = batchify(ids, self.cfg.eval_batch_size)
        chunks = [data[i:i + self.cfg.bptt] for i in range(0, data.size(0) - 1, self.cfg.bptt)]
        hidden = [model.init_hidden(self.cfg.eval_batch_size)]

        def forward(m, words):  # carry the state across chunks, as perplexity() does
            _, hidden[0], _, _ = m(words, hidden[0])

        return diagnostics.collect_gate_stats(model, chunks, forward)

    def sentences(self, count: int):
        """The first ``count`` test sentences: (name, [(layer, tokens, batch, forward)])."""
        ids, eos = self.corpus.test.tolist(), self.corpus.vocab.eos_id
        start = 0
        for n in range(count):
            stop = ids.index(eos, start) + 1
            words = torch.tensor(ids[start:stop]).unsqueeze(1)
            tokens = self.corpus.vocab.decode(ids[start:stop])
            start = stop
            yield tokens, words, (lambda m, w: m(w, m.init_hidden(1))), None  # every layer, these tokens


class MTTask:
    """Translation; the value is test BLEU (sacreBLEU, higher is better)."""

    key, higher_is_better = "mt", True

    def __init__(self, cfg: DictConfig, runs_dir: Path, seed: int):
        self.cfg, self.runs_dir, self.seed = cfg, runs_dir, seed
        self.data = None

    def model(self, kind: str):
        from g2lstm.mt.train import build_data, load_model, train

        path = self.cfg.checkpoints.get(kind)
        if path is None:
            run_dir = self.runs_dir / f"mt_{kind}"
            path = run_dir / "best.pt"
            if not (path.exists() and (run_dir / "done").exists()):
                overrides = list(self.cfg.train_overrides) + list(self.cfg.model_overrides.get(kind) or []) + [
                    f"model.cell={kind}", f"seed={self.seed}", f"run_dir={run_dir}"]
                train(compose(ROOT / "conf" / "mt", overrides))
                (run_dir / "done").write_text(" ".join(overrides))
        model, self.tokenizers, config = load_model(ROOT / path if not Path(path).is_absolute() else path)
        if self.data is None:
            self.data = build_data(config)
        return model, str(path)

    @torch.no_grad()
    def evaluate(self, model) -> float:
        from g2lstm.mt.evaluate import bleu_of

        return bleu_of(model, self.tokenizers, self.data["test"], beam=self.cfg.beam,
                       max_tokens=self.cfg.max_tokens)["bleu"]

    def _batch(self, pairs):
        from g2lstm.mt.batching import training_batch

        b = training_batch(self.tokenizers.src.encode([s for s, _ in pairs]),
                           self.tokenizers.tgt.encode([t for _, t in pairs]))
        return b["src"], b["src_lengths"], b["tgt_in"]

    def gate_stats(self, model):
        pairs = self.data["test"][: self.cfg.diagnostics.sentences]
        batches = [self._batch(pairs[i:i + 50]) for i in range(0, len(pairs), 50)]
        return diagnostics.collect_gate_stats(model, batches)  # teacher forced

    def sentences(self, count: int):
        for src, tgt in self.data["test"][:count]:
            batch = self._batch([(src, tgt)])
            src_tokens = [self.tokenizers.src.sp.id_to_piece(i) for i in batch[0][0].tolist()]
            tgt_tokens = [self.tokenizers.tgt.sp.id_to_piece(i) for i in batch[2][0].tolist()]
            yield src_tokens, batch, None, {"encoder": src_tokens, "decoder": tgt_tokens}


TASKS = {"lm": LMTask, "mt": MTTask}


# ----------------------------------------------------------------------------- one task


def saturation(summary: dict) -> dict:
    """Shares of gate values < 0.1 and > 0.9 per gate, pooled over all layers."""
    result = {}
    for gate in diagnostics.RECORDED_GATES:
        n = sum(layer[gate]["count"] for layer in summary.values())
        for side in ("share_below_0.1", "share_above_0.9"):
            result[f"{gate}_{side}"] = sum(layer[gate][side] * layer[gate]["count"] for layer in summary.values()) / n
    return result


def _rounding_precision(compression: DictConfig) -> float | None:
    """The paper's fixed grid of a task: the precision of its first absolute rounding entry."""
    for options in compression.values():
        if options.get("method") in ("round", "round_clip"):
            return float(options["precision"])
    return None


def run_task(task, cfg: DictConfig, models: list[str], out_dir: Path, command: str, merge: bool = False) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"task": task.key, "name": task.cfg.name, "metric": task.cfg.metric,
               "higher_is_better": task.higher_is_better, "command": command, "models": {}}
    if merge and (out_dir / "results.json").exists():
        previous = json.loads((out_dir / "results.json").read_text())
        if previous["task"] != task.key:
            raise ValueError(f"merge: {out_dir / 'results.json'} holds task {previous['task']!r}, not {task.key!r}")
        results["models"] = {k: v for k, v in previous["models"].items() if k not in models}
    precision = _rounding_precision(task.cfg.compression)
    for kind in models:
        t0 = time.time()
        model, path = task.model(kind)
        print(f"[{task.key}/{kind}] model from {path} ({time.time() - t0:.0f}s)", flush=True)
        rows = evaluate_under_compression(
            model, task.evaluate, OmegaConf.to_container(task.cfg.compression, resolve=True),
            gates=list(task.cfg.gates), int8=cfg.int8)
        for r in rows:
            print(f"[{task.key}/{kind}] {r['method']}: {r['value']:.2f} ({r['change']:+.2f})", flush=True)
        stats = task.gate_stats(model)
        stats.to_json(out_dir / f"gates_{kind}.json")
        results["models"][kind] = {"checkpoint": path, "command": command, "rows": rows,
                                   "saturation": saturation(stats.summary()),
                                   "gate_weights": gate_weight_stats(model, list(task.cfg.gates), precision),
                                   "rounding_precision": precision,
                                   "parameters": sum(p.numel() for p in model.parameters()),
                                   "seconds": time.time() - t0}
        averages = [{"tokens": tokens, "labels": labels,
                     "layers": {k: v.tolist() for k, v in diagnostics.token_gate_averages(model, batch, forward).items()}}
                    for tokens, batch, forward, labels in task.sentences(task.cfg.diagnostics.heatmap_sentences)]
        (out_dir / f"gate_averages_{kind}.json").write_text(json.dumps(averages))
        # Partial results survive a kill; models in the paper's order whatever order they ran in.
        results["models"] = {k: results["models"][k] for k in sorted(results["models"], key=_model_order)}
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plot_task(results, out_dir)
    return results


def _model_order(kind: str) -> tuple:
    return (list(MODEL_NAMES).index(kind) if kind in MODEL_NAMES else len(MODEL_NAMES), kind)


def plot_task(results: dict, out_dir: Path) -> None:
    """Histograms and heatmaps of every model in ``results``, from the files run_task wrote."""
    kinds = list(results["models"])
    stats = {MODEL_NAMES.get(k, k): diagnostics.GateStats.from_json(out_dir / f"gates_{k}.json") for k in kinds}
    diagnostics.plot_histograms(stats, out_dir / "histograms.png", title=f"{results['name']}: gate value histograms")
    averages = {k: json.loads((out_dir / f"gate_averages_{k}.json").read_text()) for k in kinds}
    for n, first in enumerate(averages[kinds[0]]):
        for layer in first["layers"]:
            tokens = first["tokens"]
            if first["labels"] is not None:  # MT: encoder layers read the source, decoder layers the target
                tokens = first["labels"]["encoder" if layer.startswith("encoder") else "decoder"]
            per_model = {MODEL_NAMES.get(k, k): {layer: torch.tensor(averages[k][n]["layers"][layer])} for k in kinds}
            diagnostics.plot_heatmap(tokens, per_model, out_dir / f"heatmap_{n}_{layer.replace('/', '_')}.png",
                                     layer=layer, title=f"{results['name']}, test sentence {n}, {layer}")


# ----------------------------------------------------------------------------- the table


def _cell(row: dict, digits: int) -> str:
    return f"{row['value']:.{digits}f}" if row["method"] == "original" else \
        f"{row['value']:.{digits}f} ({row['change']:+.{digits}f})"


def _column_title(method: str, rows: list[dict]) -> str:
    report = next((r.get("report") for r in rows if r["method"] == method), None) or {}
    title = COLUMNS.get(method, method)
    if report.get("method") == "svd":
        title += f" (rank {report['rank']})"
    elif report.get("relative"):
        title += f" (r={report['precision']}σ" + (f", c={report['clip']}σ" if report.get("clip") else "") + ")"
    elif report.get("method") in ("round", "round_clip"):
        title += f" (r={report['precision']}" + (f", c={report['clip']}" if report.get("clip") else "") + ")"
    return title


def _relative_size(report: dict) -> str:
    """A relative grid keeps at most 2 * clip / precision + 1 levels per block, plus the block's scale."""
    levels = 2 * math.floor(report["clip"] / report["precision"] + 1e-9) + 1 if report.get("clip") else None
    per_block = f"at most {levels} levels per block ({math.ceil(math.log2(levels))} bits/weight) and one scale " \
        "per block" if levels else "one scale per block"
    return f"{per_block}; {report['distinct_values']} distinct values over all blocks " \
           f"({report['entropy_bits_per_weight']:.2f} entropy)"


def write_table(out_dir: Path) -> str:
    """table.md and table.csv from every ``<task>/results.json`` under ``out_dir``."""
    tasks = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*/results.json"))]
    lines = []
    csv_rows = []
    for t in tasks:
        kinds = sorted(t["models"], key=_model_order)
        methods = [r["method"] for r in t["models"][kinds[0]]["rows"]]
        first_rows = t["models"][kinds[0]]["rows"]
        digits = 1 if t["task"] == "lm" else 2
        commands: dict[str, list[str]] = {}
        for kind in kinds:
            commands.setdefault(t["models"][kind].get("command", t["command"]), []).append(MODEL_NAMES.get(kind, kind))
        made_by = f"Made by `{next(iter(commands))}`." if len(commands) == 1 else "Made by " + "; ".join(
            f"`{c}` ({', '.join(names)})" for c, names in commands.items()) + "."
        lines += [f"### {t['name']}: {t['metric']} ({'higher' if t['higher_is_better'] else 'lower'} is better; "
                  "change vs the uncompressed model in brackets)", "", made_by, "",
                  "Checkpoints: " + ", ".join(f"{MODEL_NAMES.get(k, k)} `{t['models'][k]['checkpoint']}`"
                                              for k in kinds) + ".", "",
                  "| Model | " + " | ".join(_column_title(m, first_rows) for m in methods) + " |",
                  "|---" * (len(methods) + 1) + "|"]
        for kind in kinds:
            rows = {r["method"]: r for r in t["models"][kind]["rows"]}
            lines.append(f"| {MODEL_NAMES.get(kind, kind)} | " + " | ".join(_cell(rows[m], digits) for m in methods) + " |")
            for m in methods:
                report = rows[m].get("report", {})
                csv_rows.append({
                    "task": t["task"], "model": kind, "method": m, "value": rows[m]["value"], "change": rows[m]["change"],
                    "bits_per_weight": report.get("bits_per_weight", ""),
                    "size_ratio": report.get("model_size_ratio", report.get("size_ratio", "")),
                })
        lines.append("")
        for kind in kinds:  # rounding leaves a different number of values in each model
            lines += [f"Compressed size, {MODEL_NAMES.get(kind, kind)}: " + "; ".join(
                f"{COLUMNS.get(r['method'], r['method'])}: " + (
                    _relative_size(r["report"]) if r["report"].get("relative") else
                    f"{r['report']['distinct_values']} distinct values, {r['report']['bits_per_weight']} bits/weight "
                    f"({r['report']['entropy_bits_per_weight']:.2f} entropy)" if "bits_per_weight" in r["report"] else
                    f"targeted blocks x{r['report']['targeted_size_ratio']:.2f}, model x{r['report']['model_size_ratio']:.2f}"
                    if "targeted_size_ratio" in r["report"] else f"LSTM layers x{r['report']['size_ratio']:.2f}")
                for r in t["models"][kind]["rows"][1:]) + ".", ""]
        lines += ["Gate saturation over the test data (share of values < 0.1 / > 0.9, all layers pooled):", "",
                  "| Model | input <0.1 | input >0.9 | forget <0.1 | forget >0.9 | output <0.1 | output >0.9 |",
                  "|---|---|---|---|---|---|---|"]
        for kind in kinds:
            s = t["models"][kind]["saturation"]
            lines.append(f"| {MODEL_NAMES.get(kind, kind)} | " + " | ".join(
                f"{s[f'{g}_share_{side}']:.3f}" for g in diagnostics.RECORDED_GATES
                for side in ("below_0.1", "above_0.9")) + " |")
        lines.append("")
        weighed = [k for k in kinds if "gate_weights" in t["models"][k]]
        if weighed:
            r = t["models"][weighed[0]]["rounding_precision"]
            gates = list(t["models"][weighed[0]]["gate_weights"])
            lines += [f"Gate-weight magnitudes of the compressed blocks (all layers pooled; 'to 0': share with "
                      f"abs w < r/2 = {r / 2:g}, which rounding to r={r:g} sets to 0):", "",
                      "| Model | " + " | ".join(f"{g} mean abs w | {g} std | {g} max abs w | {g} to 0" for g in gates) + " |",
                      "|---" * (4 * len(gates) + 1) + "|"]
            for kind in weighed:
                w = t["models"][kind]["gate_weights"]
                lines.append(f"| {MODEL_NAMES.get(kind, kind)} | " + " | ".join(
                    f"{w[g]['mean_abs']:.3f} | {w[g]['std']:.3f} | {w[g]['max_abs']:.2f} | "
                    f"{w[g].get('share_rounded_to_zero', float('nan')):.3f}" for g in gates) + " |")
            lines.append("")
    text = "\n".join(lines)
    (out_dir / "table.md").write_text(text)
    with open(out_dir / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "model", "method", "value", "change", "bits_per_weight", "size_ratio"])
        writer.writeheader()
        writer.writerows(csv_rows)
    return text


def main(argv: list[str]) -> None:
    cfg = compose(ROOT / "conf" / "paper", argv)
    torch.set_num_threads(int(cfg.threads))
    out_dir = ROOT / cfg.out_dir
    for key in cfg.tasks:
        if key not in TASKS:
            raise ValueError(f"tasks must be among {sorted(TASKS)}, got {key!r}")
        task = TASKS[key](cfg[key], ROOT / cfg.runs_dir, cfg.seed)
        command = "python experiments/paper_table.py " + " ".join(map(shlex.quote, argv))
        run_task(task, cfg, list(cfg.models), out_dir / cfg[key].get("folder", key), command.strip(), merge=cfg.merge)
        print(write_table(out_dir), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
