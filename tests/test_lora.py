"""Decoder classifiers and LoRA (Bui et al.'s Llama family), on the in-process tiny Llama: the
seed contract for adapters, what trains, the shard, resume, several processes, bad input."""

import numpy as np
import pytest
import torch

from seedgrid.checkpoint import Checkpointer
from seedgrid.model import load_model
from seedgrid.store import VARIABLES
from seedgrid.trainer import train_cell

from conftest import run_cli, tiny_config, tiny_raw, write_toml
from test_seeds_and_batches import _record

LLAMA = {"name": "tiny-random-llama", "max_length": 32}
LORA = {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def _cfg(**sections):
    return tiny_config(**{"model": LLAMA, "lora": LORA, **sections})


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_adapters_and_head_come_from_seed_wi_alone():
    cfg = _cfg()
    built = {}
    for wi, global_seed in ((1, 0), (1, 99), (2, 0)):  # the global RNG stands for anything else
        torch.manual_seed(global_seed)
        built[wi, global_seed] = _trainable(load_model(cfg.model, 2, 0.1, wi, cfg.lora))
    same, other = built[1, 0], built[2, 0]
    names = sorted(same)
    assert names == sorted(built[1, 99])
    assert any(".lora_A." in n for n in names) and any(".lora_B." in n for n in names)
    assert any("score" in n for n in names)
    assert not [n for n in names if ".lora_" not in n and "score" not in n]  # nothing else trains
    for n in names:
        assert torch.equal(same[n], built[1, 99][n]), n  # whatever else drew from torch's RNG
        if ".lora_B." in n:
            assert not same[n].any(), n  # B starts at zero, as in peft
        else:
            assert not torch.equal(same[n], other[n]), n  # another WI draws other A and head
    a = next(t for n, t in same.items() if ".lora_A." in n)
    bound = 1 / a.shape[1] ** 0.5  # peft's kaiming_uniform(a=sqrt(5))
    assert a.abs().max() <= bound and a.abs().max() > 0.5 * bound


def test_the_head_is_the_same_with_or_without_lora():
    cfg = _cfg()
    full = dict(load_model(cfg.model, 2, 0.1, 3).named_parameters())
    lora = dict(load_model(cfg.model, 2, 0.1, 3, cfg.lora).named_parameters())
    head = next(t for n, t in lora.items() if n.endswith("score.modules_to_save.default.weight"))
    assert torch.equal(head, full["score.weight"])


def test_only_adapters_and_head_train_and_a_stopped_cell_resumes_bitwise(tmp_path):
    cfg = _cfg(runtime={"deterministic": True})
    torch.manual_seed(0)
    before = {n: p.detach().clone() for n, p in
              load_model(cfg.model, 2, 0.1, 1, cfg.lora).named_parameters()}
    checkpointer = Checkpointer(tmp_path / "wi1_do2.pt")
    stopped = train_cell(cfg, 1, 2, checkpointer=checkpointer, stop_fraction=0.5,
                         log=lambda _: None)
    assert stopped.status.item() == "stopped"
    after = checkpointer.load()["model"]
    assert set(after) == set(before)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".lora_" in n or "score.modules_to_save" in n for n in changed)
    assert any(".lora_B." in n for n in changed)  # the adapters learned
    resumed = train_cell(cfg, 1, 2, checkpointer=checkpointer, log=lambda _: None)
    whole = train_cell(cfg, 1, 2, log=lambda _: None)
    for name in VARIABLES:  # the usual shard, and the same one
        assert resumed[name].dims == whole[name].dims
    assert resumed.status.item() == "done"
    for name in ("logits", "train_loss"):
        assert resumed[name].values.tobytes() == whole[name].values.tobytes()
    assert "[lora]" in whole.attrs["config"] and "rank = 4" in whole.attrs["config"]


def test_gradient_checkpointing_changes_memory_not_numbers():
    plain = train_cell(_cfg(), 1, 2, log=lambda _: None)
    recomputed = train_cell(_cfg(runtime={"gradient_checkpointing": True}), 1, 2,
                            log=lambda _: None)
    np.testing.assert_allclose(recomputed.train_loss.values, plain.train_loss.values,
                               rtol=1e-5, atol=1e-6)


def test_two_processes_see_the_same_global_batches_with_lora(tmp_path):
    # LoRA dropout and attention dropout on: the masks are the cell's own on any layout
    common = {"model": LLAMA, "lora": {**LORA, "dropout": 0.1},
              "train": {"dropout": 0.1, "batch_size": 6}}
    one, shard_one = _record(tmp_path, "one", 1, **common)
    two, shard_two = _record(tmp_path, "two", 2, **common)
    assert one == two
    np.testing.assert_allclose(shard_two.train_loss.values, shard_one.train_loss.values,
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(shard_two.logits.values, shard_one.logits.values, rtol=0,
                               atol=1e-5)


def test_lora_changes_the_config_hash_and_full_fine_tuning_keeps_its_own():
    assert _cfg().hash != tiny_config(model=LLAMA).hash
    assert _cfg().hash != _cfg(lora={**LORA, "rank": 8}).hash
    assert tiny_config(lora={"rank": 0}).hash == tiny_config().hash


@pytest.mark.parametrize("lora, message", [
    ({**LORA, "target_modules": ["query", "nope"]},
     "[lora] target_modules: 'query' is not a module of this model: choose from"),
    ({"rank": 4}, "[lora] rank > 0 needs target_modules"),
    ({**LORA, "rank": -1}, "[lora] rank = -1 must be from 0 (off) to 4096"),
    ({**LORA, "dropout": 1.5}, "[lora] dropout = 1.5 must be in [0, 1)"),
    ({**LORA, "target_modules": "q_proj"}, "[lora] target_modules = 'q_proj' should be a list of strings"),
])
def test_bad_lora_is_one_line_exit_2_and_nothing_written(tmp_path, lora, message):
    config = write_toml(tmp_path / "bad.toml", tiny_raw(model=LLAMA, lora=lora))
    out = tmp_path / "run"
    result = run_cli("submit", "--config", str(config), "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("seedgrid: error:")]
    assert message in line
    assert not out.exists()


def test_bfloat16_weights_train_with_float32_adapters_and_join_the_hash(tmp_path):
    cfg = _cfg(model={**LLAMA, "dtype": "bfloat16"})
    assert cfg.hash != _cfg().hash
    assert tiny_config(model={"dtype": "float32"}).hash == tiny_config().hash  # older hashes hold
    model = load_model(cfg.model, 2, 0.1, 1, cfg.lora)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if ".lora_" in n)
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if ".lora_" not in n
               and "score" not in n)
    shard = train_cell(cfg, 1, 2, log=lambda _: None)
    assert shard.status.item() == "done" and np.isfinite(shard.train_loss.values).all()
    assert "dtype = \"bfloat16\"" in shard.attrs["config"]
    config = write_toml(tmp_path / "bad.toml", tiny_raw(model={**LLAMA, "dtype": "float16"}))
    result = run_cli("submit", "--config", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "[model] dtype = 'float16' must be one of" in result.stderr


def test_a_saved_causal_llama_folder_loads_as_a_classifier_as_the_hub_checkpoint_would(tmp_path):
    """The path a cluster takes for meta-llama/Llama-3.2-3B (or a local copy of it): a causal-LM
    checkpoint without a classification head and a tokenizer without a padding token, loaded
    by from_pretrained. The body is the checkpoint's, the head comes from seed_wi, padding is
    the end-of-text token, and a LoRA cell trains and writes its shard."""
    import transformers

    from seedgrid.config import ModelConfig
    from seedgrid.model import load_tokenizer, resolve

    tokenizer = transformers.AutoTokenizer.from_pretrained(resolve("tiny-random-llama"))
    tokenizer.eos_token, tokenizer.pad_token = "[SEP]", None
    config = transformers.LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                                      num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, intermediate_size=64,
                                      eos_token_id=tokenizer.convert_tokens_to_ids("[SEP]"))
    torch.manual_seed(5)
    causal = transformers.LlamaForCausalLM(config)
    folder = tmp_path / "llama-like"
    causal.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    model_cfg = ModelConfig(name=str(folder), max_length=32)
    assert load_tokenizer(model_cfg).pad_token == "[SEP]"
    heads = {}
    for wi in (1, 2):
        model = load_model(model_cfg, 1 + wi, 0.1, wi)  # 2 and 3 labels: any width
        assert model.config.pad_token_id == config.eos_token_id
        body = dict(model.named_parameters())
        for name, p in causal.model.named_parameters():
            assert torch.equal(body[f"model.{name}"], p), name  # the checkpoint's body
        heads[wi] = body["score.weight"].detach().clone()
    again = dict(load_model(model_cfg, 2, 0.1, 1).named_parameters())["score.weight"]
    assert torch.equal(again, heads[1]) and heads[2].shape == (3, 32)

    raw = tiny_raw(model={"name": str(folder), "max_length": 32}, lora=LORA)
    run = run_cli("run", "--config", str(write_toml(tmp_path / "c.toml", raw)), "--wi", "1",
                  "--do", "2", "--out", str(tmp_path / "run"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run/shards/wi1_do2.nc").exists()
