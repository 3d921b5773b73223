"""End to end on the real packaged MiniLM and real movie-review sentences (tens of seconds)."""

import numpy as np
import pytest

from seedgrid.config import load_config
from seedgrid.store import read_shard

from conftest import run_cli, write_toml


@pytest.mark.slow
def test_demo_model_trains_and_different_seeds_predict_differently(tmp_path):
    raw = load_config("demo").to_dict()  # the demo preset, on fewer examples
    raw["task"].update(train_size=160, validation_size=100)
    raw["train"]["evals_per_epoch"] = 2
    config = write_toml(tmp_path / "small-demo.toml", raw)
    out = tmp_path / "run"
    for wi, do in [(1, 1), (2, 2)]:
        result = run_cli("run", "--config", str(config), "--wi", str(wi), "--do", str(do),
                         "--out", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
    a, b = (read_shard(out / f"shards/wi{s}_do{s}.nc") for s in (1, 2))
    assert a.attrs["model"] == "embedded:minilm" and a.sizes["example"] == 100
    assert a.status.item() == b.status.item() == "done"
    assert np.isfinite(a.logits).all() and np.isfinite(a.train_loss).all()
    pred_a, pred_b = (s.logits.isel(step=-1).argmax("class").values.ravel() for s in (a, b))
    assert (pred_a != pred_b).any()
    assert not np.allclose(a.logits.values, b.logits.values)
