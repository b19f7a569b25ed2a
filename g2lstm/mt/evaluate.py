"""BLEU and chrF with sacrebleu, and the BLEU of a model on sentence pairs.

``sacrebleu`` scores detokenized output against raw references (its own 13a tokenization), and
reports a signature that says exactly how. ``tokenized_bleu`` scores whitespace tokens after an
explicit tokenization (13a by default, lowercased like the paper's IWSLT14 setup), which is what
``multi-bleu.perl`` computes on tokenized text; on already tokenized data (fairseq's prepared
IWSLT14) pass ``tokenize='none'``.
"""

from __future__ import annotations

from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from .decode import translate
from .model import Seq2Seq
from .tokenizer import Tokenizers


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"need one hypothesis per reference, got {len(hyps)} hypotheses and {len(refs)} references")


TOKENIZED_BLEU = ("13a", "none")  # tokenizations before tokenized BLEU


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str = "13a", lowercase: bool = True) -> float:
    """Corpus BLEU over whitespace tokens after ``tokenize`` ('13a' or 'none'), like multi-bleu.perl."""
    _check(hyps, refs)
    if tokenize not in TOKENIZED_BLEU:
        raise ValueError(f"tokenize must be '13a' or 'none', got {tokenize!r}")
    tok = Tokenizer13a() if tokenize == "13a" else (lambda s: s)
    prep = (lambda s: tok(s).lower()) if lowercase else tok
    return BLEU(tokenize="none", force=True).corpus_score([prep(h) for h in hyps], [[prep(r) for r in refs]]).score


def score(hyps: Sequence[str], refs: Sequence[str], tokenized: str = "13a") -> dict:
    """sacreBLEU and chrF of detokenized ``hyps`` against raw ``refs``, their signatures, and
    lowercased tokenized BLEU."""
    _check(hyps, refs)
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(list(hyps), [list(refs)])
    chrf_score = chrf.corpus_score(list(hyps), [list(refs)])
    return {
        "bleu": bleu_score.score,
        "chrf": chrf_score.score,
        "tok_bleu": tokenized_bleu(hyps, refs, tokenize=tokenized),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_verbose": str(bleu_score),
    }


def bleu_of(
    model: Seq2Seq,
    tokenizers: Tokenizers,
    pairs: Sequence[tuple[str, str]],
    beam: int = 5,
    length_penalty: float = 1.0,
    max_tokens: int = 4000,
    tokenized: str = "13a",
    return_hypotheses: bool = False,
) -> dict:
    """Translate the sources of ``pairs`` and score them against the targets (see :func:`score`)."""
    hyps = translate(model, tokenizers, [s for s, _ in pairs], beam=beam, length_penalty=length_penalty, max_tokens=max_tokens)
    result = score(hyps, [t for _, t in pairs], tokenized=tokenized)
    if return_hypotheses:
        result["hypotheses"] = hyps
    return result
