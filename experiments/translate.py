"""Translate a file with a trained checkpoint, one sentence a line (plain or .gz), in order.

    python experiments/translate.py runs/mt/<run>/best.pt --input test.de --output test.hyp
    python experiments/translate.py runs/mt/<run>/best.pt --input test.de.gz --reference test.en.gz
    python experiments/translate.py CKPT --greedy < in.de > out.en

Empty lines translate to empty lines; lines longer than --max-src-tokens subwords are cut (with a
warning). With --reference, prints sacreBLEU and chrF (with their signatures) and tokenized BLEU;
a blank line in the input or the reference is then refused (file:line), since it would be scored.
--output may not be the checkpoint, the input or the reference.

A thin wrapper of g2lstm.cli.translate (installed as g2lstm-translate).
"""

from g2lstm.cli import translate

if __name__ == "__main__":
    translate()
