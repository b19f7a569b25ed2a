"""The explorer page of trained models of one task, side by side: one offline HTML file.

    python experiments/explore.py checkpoints=[A/best.pt,B/best.pt] names=[lstm,g2] max_texts=1000 out=runs/explore/x.html

(config: g2lstm/conf/explore; docs/explore.md). A thin wrapper of g2lstm.cli.explore (installed as
g2lstm-explore).
"""

from g2lstm.cli import explore

if __name__ == "__main__":
    explore()
