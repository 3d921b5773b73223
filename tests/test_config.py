"""Config: presets, validation with one clear message, and the hash that decides merging."""

import pytest

from seedgrid.config import config_from_dict, load_config, preset_names, with_seeds
from seedgrid.errors import UsageError

from conftest import REPO, tiny_config, tiny_raw, write_toml


#: what Dodge et al. 2020 state (seeds/002_…): "BERT-large, uncased", "three epochs", "a batch
#: size of 16, a learning rate of 0.00002, and dropout of 0.1", the head's std 0.02 (the
#: model's own initializer_range: the preset leaves it), evaluated "every 10th of an epoch
#: (except SST, which was evaluated every 100 steps, equivalent to 42 times per epoch)", grids of
#: 25 x 25 (15 x 15 on SST) with seeds from 1 (footnote 3)
DODGE_STATED = {"model": "bert-large-uncased", "epochs": 3, "batch_size": 16,
                "learning_rate": 2e-5, "dropout": 0.1, "initializer_range": 0.0,
                "evals_per_epoch": {"mrpc": 10, "rte": 10, "cola": 10, "sst2": 42},
                "grid": {"mrpc": 25, "rte": 25, "cola": 25, "sst2": 15}}


def test_every_preset_loads_and_dodge_presets_match_the_paper():
    assert {"demo", "dodge2020-mrpc", "dodge2020-rte", "dodge2020-cola", "dodge2020-sst2",
            "bui2025-rte"} <= set(preset_names())
    for task, n in DODGE_STATED["grid"].items():
        cfg = load_config(f"dodge2020-{task}")
        assert cfg.model.name == DODGE_STATED["model"] and cfg.task.name == task
        assert cfg.model.initializer_range == DODGE_STATED["initializer_range"]
        t = cfg.train
        assert (t.batch_size, t.learning_rate, t.epochs, t.dropout, t.evals_per_epoch) == (
            DODGE_STATED["batch_size"], DODGE_STATED["learning_rate"], DODGE_STATED["epochs"],
            DODGE_STATED["dropout"], DODGE_STATED["evals_per_epoch"][task])
        assert cfg.grid.seeds_wi == cfg.grid.seeds_do == tuple(range(1, n + 1))
        text = (REPO / f"seedgrid/presets/dodge2020-{task}.toml").read_text()
        header = " ".join(ln.lstrip("# ") for ln in text.splitlines() if ln.startswith("#"))
        assert "not the paper's text" in header  # warmup: the authors' code, said so
    assert load_config("bui2025-rte").model.name == "roberta-large"


def test_hash_ignores_seeds_and_runtime_but_not_hyperparameters():
    base = tiny_config()
    assert with_seeds(base, [7, 8], [9]).hash == base.hash
    assert tiny_config(runtime={"gradient_accumulation": 4, "deterministic": False}).hash == base.hash
    assert tiny_config(train={"learning_rate": 2e-3}).hash != base.hash
    assert tiny_config(task={"train_size": 41}).hash != base.hash
    assert tiny_config(model={"name": "embedded:minilm"}).hash != base.hash


def test_frozen_toml_round_trips(tmp_path):
    cfg = tiny_config(task={"data_files": {"train": "a.csv", "validation": "b.csv"}})
    path = tmp_path / "frozen.toml"
    path.write_text(cfg.to_toml())
    again = load_config(path)
    assert again.hash == cfg.hash and again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("sections, message", [
    ({"train": {"learnign_rate": 1.0}}, "unknown key 'learnign_rate' in [train]: did you mean 'learning_rate'? valid keys are"),
    ({"train": {"epochs": "3"}}, "[train] epochs = '3' should be an integer"),
    ({"train": {"epochs": 0}}, "[train] epochs = 0 must be from 1 to 1000"),
    ({"train": {"dropout_seed": "seed_xx"}}, "dropout_seed = 'seed_xx' must be one of"),
    ({"train": {"mixed_precision": "fp8"}}, "mixed_precision = 'fp8' must be one of"),
    ({"task": {"name": "sts-b"}}, "unknown task 'sts-b': did you mean 'stsb'? choose one of"),
    ({"grid": {"seeds_wi": [1, -2]}}, "seed_wi = -2 is not an integer from 0 to 2**63 - 1"),
    ({"grid": {"seeds_do": [3, 4, 3]}}, "seed_do 3 is given twice"),
    ({"grid": {"n_wi": 0}}, "n_wi = 0 must be an integer from 1 to 10000"),
])
def test_bad_values_name_the_value_and_the_fix(sections, message):
    raw = tiny_raw(**sections)
    if "grid" in sections:
        raw["grid"] = sections["grid"]
    with pytest.raises(UsageError) as err:
        config_from_dict(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_preset_and_missing_file_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown preset 'dmeo': choose one of .*demo"):
        load_config("dmeo")
    with pytest.raises(UsageError, match="config file .*nope.toml' not found"):
        load_config(str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 1")
    with pytest.raises(UsageError, match="is not valid TOML"):
        load_config(bad)


def test_seeds_default_to_one_to_n(tmp_path):
    raw = tiny_raw()
    raw["grid"] = {"n_wi": 3, "seeds_do": [10, 20]}
    cfg = load_config(write_toml(tmp_path / "c.toml", raw))
    assert cfg.grid.seeds_wi == (1, 2, 3) and cfg.grid.seeds_do == (10, 20)


def test_bui_presets_are_ten_coupled_runs_per_task_and_family():
    from seedgrid.model import check_lora
    from seedgrid.tasks import TASKS

    tasks = [n.removeprefix("bui2025-") for n in preset_names()
             if n.startswith("bui2025-") and not n.endswith("-llama")]
    assert len(tasks) >= 15 and set(tasks) <= set(TASKS)
    assert {"copa", "wsc", "multirc"} <= set(tasks)  # SuperGLUE's other classification tasks
    for task in tasks:
        roberta, llama = load_config(f"bui2025-{task}"), load_config(f"bui2025-{task}-llama")
        for cfg in (roberta, llama):
            assert cfg.task.name == task and cfg.grid.coupled
            assert cfg.grid.cells() == [(k, k) for k in range(1, 11)]
        assert roberta.model.name == "roberta-large" and roberta.lora.rank == 0
        assert llama.model.name == "meta-llama/Llama-3.2-3B" and llama.lora.rank == 8
        assert llama.train.mixed_precision == "bf16"
        assert llama.train.dropout == 0.0  # Llama-3.2's own attention dropout, unchanged
        assert roberta.train.dropout == 0.1  # RoBERTa's own
        # the adapters' targets exist in a Llama classifier (the tiny one: same module names)
        check_lora(llama.model.__class__(name="tiny-random-llama"), llama.lora)
