"""Translate a file with a trained checkpoint, one sentence a line (plain or .gz), in order.

    python experiments/translate.py runs/mt/<run>/best.pt --input test.de --output test.hyp
    python experiments/translate.py runs/mt/<run>/best.pt --input test.de.gz --reference test.en.gz
    python experiments/translate.py CKPT --greedy < in.de > out.en

Empty lines translate to empty lines; lines longer than --max-src-tokens subwords are cut (with a
warning). With --reference, prints sacreBLEU and chrF (with their signatures) and tokenized BLEU.
"""

import argparse
import sys

import torch

from g2lstm.data.mt import read_lines
from g2lstm.mt.decode import translate
from g2lstm.mt.evaluate import score
from g2lstm.mt.train import load_model
from g2lstm.runtime import CheckpointError


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="best.pt or last.pt of a training run")
    p.add_argument("--input", help="source file (plain or .gz); default stdin")
    p.add_argument("--output", help="where to write translations; default stdout")
    p.add_argument("--reference", help="reference file: print BLEU, chrF and tokenized BLEU")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--greedy", action="store_true", help="greedy decoding (same as --beam 1)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="score / length**this")
    p.add_argument("--max-len-a", type=float, default=2.0, help="output <= a * source length + b")
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--max-src-tokens", type=int, default=250, help="longer source lines are cut")
    p.add_argument("--max-tokens", type=int, default=4000, help="source tokens per batch, shared by the beams")
    p.add_argument("--tokenized-bleu", default="13a", choices=["13a", "none"],
                   help="tokenization before tokenized BLEU ('none' for pre-tokenized data)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    model, tokenizers, _ = load_model(args.checkpoint, args.device)
    sources = read_lines(args.input) if args.input else [line.rstrip("\n") for line in sys.stdin]
    hyps = translate(model, tokenizers, sources, beam=1 if args.greedy else args.beam,
                     length_penalty=args.length_penalty, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                     max_src_tokens=args.max_src_tokens, max_tokens=args.max_tokens)
    text = "".join(h + "\n" for h in hyps)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if args.reference:
        references = read_lines(args.reference)
        if not references or len(references) != len(hyps):
            raise ValueError(f"--reference {args.reference} has {len(references)} lines; expected one reference "
                             f"for each of the {len(hyps)} input lines (and at least one)")
        s = score(hyps, references, tokenized=args.tokenized_bleu)
        print(f"BLEU {s['bleu']:.2f}  chrF {s['chrf']:.2f}  tokenized BLEU {s['tok_bleu']:.2f}", file=sys.stderr)
        print(f"{s['bleu_signature']}\n{s['chrf_signature']}", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, CheckpointError) as error:  # bad input: the message, no traceback
        sys.exit(f"translate.py: error: {error}")
