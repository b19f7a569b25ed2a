"""Named recipes: the module constructor and every trainer's recipe= select the same G2 options."""

import pytest
import torch

from g2lstm import G2LSTM, G2LSTMCell
from g2lstm.config import compose_config
from g2lstm.recipes import RECIPES

TASKS = ("lm", "mt", "classify", "translit")


@pytest.mark.parametrize("module", [G2LSTM, G2LSTMCell])
def test_from_recipe_sets_the_recipe_and_keeps_the_other_arguments(module):
    rnn = module.from_recipe("binary", 4, 6, bias=False)
    assert (rnn.gates, rnn.noise_p, rnn.tau) == ("gumbel", 1.0, 0.5)
    assert rnn.bias is False and rnn.hidden_size == 6
    default = module(4, 6)
    assert (default.noise_p, default.tau) == (0.2, 1.0)  # the recipe is not the default


def test_a_binary_recipe_layer_trains_with_every_gate_element_perturbed():
    torch.manual_seed(0)
    rnn = G2LSTM.from_recipe("binary", 3, 5, impl="reference")
    out, _ = rnn(torch.randn(7, 2, 3))
    out.sum().backward()
    assert rnn.weight_ih_l0.grad is not None and rnn.weight_ih_l0.grad.abs().sum() > 0


def test_a_recipe_option_passed_as_well_is_refused_and_an_unknown_recipe_named():
    with pytest.raises(ValueError, match=r"recipe 'binary' sets \['noise_p'\]"):
        G2LSTM.from_recipe("binary", 4, 6, noise_p=0.3)
    with pytest.raises(ValueError, match=r"recipe must be one of \['binary', 'hard'\], got 'binry'"):
        G2LSTM.from_recipe("binry", 4, 6)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("task", TASKS)
def test_every_trainer_recipe_file_says_what_the_python_recipe_says(task, recipe):
    """recipe=<name> in each config root sets model.cell, noise_p, tau and the gate modes (the LM's
    model keys, the other trainers' model.g2_options) as RECIPES[name] does, and wins over the task's
    defaults; the model it builds has those options."""
    cfg = compose_config(task, [f"recipe={recipe}"])
    options = dict(RECIPES[recipe])
    assert options.pop("gates") == "gumbel" and cfg.model.cell == "g2lstm"
    assert cfg.recipe == recipe
    configured = {key: cfg.model[key] for key in ("noise_p", "tau")}
    for key in ("train_gates", "eval_gates"):
        configured[key] = cfg.model.get(key, cfg.model.get("g2_options", {}).get(key, "soft"))
    assert {key: configured[key] for key in options} == options
    assert {key: configured[key] for key in configured if key not in options} == {
        key: "soft" for key in configured if key not in options}
    plain = compose_config(task, [])
    assert (plain.model.noise_p, plain.model.tau) != (options["noise_p"], options["tau"])


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_from_recipe_builds_the_recipe_s_options(recipe):
    rnn = G2LSTM.from_recipe(recipe, 4, 6)
    assert {key: getattr(rnn, key) for key in RECIPES[recipe]} == dict(RECIPES[recipe])


def test_the_hard_recipe_trains_and_evaluates_with_binary_gates():
    import g2lstm.trace

    torch.manual_seed(1)
    rnn = G2LSTM.from_recipe("hard", 3, 5)
    x = torch.randn(6, 2, 3)
    for training in (True, False):
        with g2lstm.trace.record(rnn.train(training)) as recorded:
            rnn(x)
        steps = recorded.layer("", layer=0, direction=0)
        assert set(steps.i.unique().tolist()) | set(steps.f.unique().tolist()) == {0.0, 1.0}, training


def test_a_recipe_wins_over_the_experiment_and_loses_to_the_command_line():
    cfg = compose_config("lm", ["experiment=binarize_bible", "recipe=binary"])
    assert (cfg.model.noise_p, cfg.model.tau, cfg.model.emsize) == (1.0, 0.5, 64)
    cfg = compose_config("lm", ["recipe=binary", "model.tau=0.25"])
    assert (cfg.model.noise_p, cfg.model.tau) == (1.0, 0.25)


@pytest.mark.parametrize("task", TASKS)
def test_a_recipe_with_another_cell_is_refused_not_ignored(task):
    """model.cell=lstm recipe=binary would train an LSTM with the recipe's noise settings unused."""
    from g2lstm.config import ConfigValueError

    assert compose_config(task, ["recipe=binary"]).recipe == "binary"
    assert compose_config(task, []).recipe is None
    with pytest.raises(ConfigValueError, match=r"^recipe='binary': expected model.cell='g2lstm', the recipe's cell; "
                                               r"model.cell='sharpened' was given as well"):
        compose_config(task, ["recipe=binary", "model.cell=sharpened"])


def test_a_misspelt_recipe_is_an_error_that_lists_the_recipes():
    with pytest.raises(Exception, match=r"(?s)recipe/binry.*Available options in 'recipe':\s+binary\s+hard"):
        compose_config("lm", ["recipe=binry"])


@pytest.mark.parametrize("task", ["translit", "lm", "mt"])
def test_every_run_of_the_convergence_queue_composes_to_what_its_name_says(task):
    """results/binarization/run_convergence.sh: each queued command is a valid config of its
    trainer, and its folder name matches its cell, recipe, finetune source and evaluation gates."""
    import shlex
    import subprocess
    from pathlib import Path

    from omegaconf import OmegaConf

    script = Path(__file__).resolve().parents[1] / "results/binarization/run_convergence.sh"
    lines = subprocess.run(["bash", str(script), task, "1 2", "--dry-run"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    assert len(lines) == 22
    for line in lines:
        overrides = shlex.split(line)[2:]  # python experiments/train_<task>.py ...
        run_dir = next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir="))
        cfg = OmegaConf.to_container(compose_config(task, [o for o in overrides if not o.startswith("hydra.")]),
                                     resolve=True)
        name, model, train = Path(run_dir).name, cfg["model"], cfg["train"]
        assert name.endswith(f"_s{cfg['seed']}")
        if "lstm" in name.split("_")[:3] and "then" not in name:  # model_cell_lstm_s1
            assert model["cell"] == "lstm"
        if "binary" in name and "stochastic_binary" not in name:
            assert (model["cell"], model["noise_p"], model["tau"]) == ("g2lstm", 1.0, 0.5)
        if "_then_" in name:
            source = name.split("_then_")[0]
            assert Path(train["init_from"]).parent.name in (f"model_cell_{source}_s{cfg['seed']}",
                                                            f"recipe_{source}_s{cfg['seed']}")
        def option(key):
            return model.get(key, model.get("g2_options", {}).get(key, "soft"))

        straight_through = name.startswith(("lstm_then_straight_through", "lstm_then_stochastic_binary"))
        assert (option("eval_gates") == "hard") == (name.startswith("binary_then_hard") or straight_through)
        assert (option("train_gates") == "hard") == straight_through
        if straight_through:
            noise_p = 1.0 if "stochastic" in name else 0.0
            assert (model["cell"], model["noise_p"], model["tau"]) == ("g2lstm", noise_p, 1.0)
        if name.startswith("schedule"):
            assert train["schedules"]["noise_p"]["end"] == 1.0 and train["schedules"]["tau"]["end"] == 0.5
