"""Train a Latin -> Cyrillic transliterator: python experiments/train_translit.py model.cell=g2lstm

One output folder per run (runs/translit/<time>_<cell>_s<seed>/ with config.yaml, last.pt,
best.pt, metrics.jsonl, results.json); rerunning with the same hydra.run.dir resumes from last.pt.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from g2lstm.config import CONF_ROOT
from g2lstm.translit.train import train


@hydra.main(version_base="1.3", config_path=str(CONF_ROOT / "translit"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    return train(cfg, hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task)).get("word_accuracy")


if __name__ == "__main__":
    main()
