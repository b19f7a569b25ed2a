"""The interpretability report on trained models of one task, side by side.

    nice -n 10 python experiments/interpret.py checkpoints=[A/best.pt,B/best.pt] [key=value ...]

(config: g2lstm/conf/interpret). Loads every checkpoint with ``g2lstm.load``, reads the texts (a file,
or the first ``max_texts`` of the run's test split) and writes ``out_dir/report.md`` and
``out_dir/report.json`` with :func:`g2lstm.interpret.report.write_report`.

A thin wrapper of g2lstm.cli.interpret (installed as g2lstm-interpret).
"""

from g2lstm.cli import interpret

if __name__ == "__main__":
    interpret()
