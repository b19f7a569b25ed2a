"""Write a checkpoint as one compressed file to ship (see docs/compression.md, "Shipping a compressed model").

    python experiments/export_checkpoint.py runs/lm/<run>/best.pt lm_small.pt --method round_clip --precision 0.2 --clip 0.4
    python experiments/export_checkpoint.py runs/mt/<run>/best.pt mt_4bit.pt --method quantize --bits 4 --evaluate

A thin wrapper of g2lstm.cli.export_checkpoint (installed as g2lstm-export).
"""

from g2lstm.cli import export_checkpoint

if __name__ == "__main__":
    export_checkpoint()
