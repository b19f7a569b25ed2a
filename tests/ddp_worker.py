"""Run trainer jobs in a torchrun launch, one after another in the same process group (tests/test_ddp.py).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py JOBS.json

JOBS.json: a list of ``[task, run_dir, overrides]`` with task ``lm``, ``mt``, ``classify`` or ``translit``.
"""

import json
import sys

import torch.distributed as dist

from g2lstm.classify.train import classify_config, train as train_classify
from g2lstm.lm.train import lm_config, train as train_lm
from g2lstm.mt.train import mt_config, train as train_mt
from g2lstm.translit.train import translit_config, train as train_translit

TRAINERS = {"lm": (lm_config, train_lm), "mt": (mt_config, train_mt), "classify": (classify_config, train_classify),
            "translit": (translit_config, train_translit)}

if __name__ == "__main__":
    for task, run_dir, overrides in json.loads(open(sys.argv[1], encoding="utf-8").read()):
        compose, train = TRAINERS[task]
        train(compose(overrides), run_dir)
    if dist.is_initialized():
        dist.destroy_process_group()
