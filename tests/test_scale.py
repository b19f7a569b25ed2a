"""Scaling out: the console scripts and their packaged configs, and sweeps with Hydra's launchers."""

import importlib
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
import yaml

from g2lstm.config import CONF_ROOT

try:
    import tomllib  # the standard library's from Python 3.11
except ImportError:  # Python 3.10: the dev extra installs tomli, the same parser
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
TINY_LM = ["data=text", "data.vocab_size=300", "model.emsize=8", "model.nhid=12", "train.batch_size=4",
           "train.eval_batch_size=4", "train.bptt=12", "train.max_minutes=null", "threads=1"]


def _run(args, cwd, timeout=180):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}  # the checkout's package, run from elsewhere
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_every_console_script_names_a_function_of_the_package():
    scripts = PYPROJECT["project"]["scripts"]
    assert {"g2lstm-train-lm", "g2lstm-train-mt", "g2lstm-translate", "g2lstm-paper-table"} <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
    # one console script per entry point of the checkout, and each wrapper calls its function
    wrappers = sorted(p.stem for p in (REPO / "experiments").glob("*.py"))
    assert sorted(t.split(":")[1] for t in scripts.values()) == wrappers
    for stem in wrappers:
        assert f"from g2lstm.cli import {stem}\n" in (REPO / "experiments" / f"{stem}.py").read_text()


def test_the_package_data_holds_every_config_and_the_cpu_kernel_source():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["g2lstm"]
    package = REPO / "g2lstm"
    shipped = [p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts
               and any(fnmatch(str(p.relative_to(package)), pat.replace("**/", "*")) for pat in patterns)]
    configs = sorted(CONF_ROOT.rglob("*.yaml"))
    assert CONF_ROOT.parent == package and len(configs) > 20
    assert set(configs) <= set(shipped)
    assert package / "kernels" / "cpu_lstm.cpp" in shipped
    assert not (REPO / "conf").exists()  # one copy of the configs


@pytest.mark.slow
@pytest.mark.parametrize("entry, model_key", [("train_lm", "nhid"), ("train_mt", "hidden_dim")])
def test_the_hydra_entry_points_compose_their_packaged_config_outside_the_checkout(tmp_path, entry, model_key):
    done = _run(["-c", f"from g2lstm.cli import {entry}; {entry}()", "--cfg", "job", "train.max_steps=5"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cfg = yaml.safe_load(done.stdout)
    assert cfg["train"]["max_steps"] == 5
    assert model_key in cfg["model"]  # the entry point's own root
    assert list(tmp_path.iterdir()) == []  # printing the config writes nothing


@pytest.mark.slow
def test_a_joblib_sweep_runs_four_tiny_lm_runs_in_parallel(lm_corpus, tmp_path):
    sweep = tmp_path / "sweep"
    done = _run([str(REPO / "experiments" / "train_lm.py"), "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 f"hydra.sweep.dir={sweep}", *TINY_LM, f"data.path={lm_corpus}", "train.max_steps=2",
                 "seed=1,2,3,4"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr
    runs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in runs] == [f"{i}_text_g2lstm_s{i + 1}" for i in range(4)]
    weights = []
    for seed, run in enumerate(runs, 1):
        assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
        checkpoint = torch.load(run / "last.pt", weights_only=False)
        assert checkpoint["run"]["step"] == 2
        weights.append(checkpoint["model"]["encoder.weight"])
    assert all(not torch.equal(weights[0], w) for w in weights[1:])  # each job got its own seed


@pytest.mark.slow
def test_the_submitit_slurm_launcher_of_the_readme_composes(tmp_path):
    readme = (REPO / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "hydra/launcher=submitit_slurm" in line)
    overrides = [w for w in command.split() if "=" in w and w.startswith("hydra")]
    done = _run(["-c", "from g2lstm.cli import train_lm; train_lm()", "--cfg", "hydra", *overrides], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    launcher = yaml.safe_load(done.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    for word in overrides[1:]:
        key, value = word.removeprefix("hydra.launcher.").split("=")
        assert str(launcher[key]) == value, key
