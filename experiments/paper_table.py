"""The paper's compression table in one command (Li et al. 2018, Table 3, on the data we have).

    nice -n 10 python experiments/paper_table.py [key=value ...]     (config: g2lstm/conf/paper)

For each task in ``tasks`` and each model kind in ``models`` (lstm, sharpened, g2lstm): train it
with the task's own trainer unless a checkpoint is given or already trained in ``runs_dir``,
evaluate it uncompressed and under the task's compressions, collect its gate statistics, and write
``<out_dir>/<task>/`` (see g2lstm/paper.py) and the table over every task, ``table.md`` and
``table.csv``. ``merge=true`` adds models to an existing task folder without re-running the others.

A thin wrapper of g2lstm.cli.paper_table (installed as g2lstm-paper-table).
"""

from g2lstm.cli import paper_table

if __name__ == "__main__":
    paper_table()
