"""Train a translation model: python experiments/train_mt.py experiment=multi30k_cpu model.cell=g2lstm

One output folder per run (runs/mt/<time>_<cell>/ with last.pt, best.pt, metrics.jsonl,
test.hyp, results.json); rerunning with the same hydra.run.dir resumes from last.pt.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from g2lstm.mt.train import train


@hydra.main(version_base="1.3", config_path="../conf/mt", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    return train(cfg, hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task)).get("bleu")


if __name__ == "__main__":
    main()
