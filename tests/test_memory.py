"""A pack's memory estimate (seedgrid.memory) against what seedgrid's engine really keeps for the
backward pass: every tensor saved by autograd in a forward, summed once per storage (parameters
left out), for models of BERT's structure in float32 and with bf16 autocast, alone and packed."""

import pytest
import torch
import transformers

from seedgrid import engine, memory


def _saved_bytes(model, masks, k: int, batch: int, seq: int, bf16: bool) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(5, model.config.vocab_size, (k * batch, seq))
    masks.begin(0, 0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        engine.forward_losses(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                              torch.zeros(k * batch, dtype=torch.long), k, "bert")
    return sum(saved.values())


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("hidden, heads, layers, seq", [(256, 4, 2, 128), (128, 8, 3, 64)])
def test_the_activation_estimate_is_within_a_quarter_of_what_the_engine_keeps(
        k, bf16, hidden, heads, layers, seq):
    config = transformers.BertConfig(num_labels=2, hidden_size=hidden, num_attention_heads=heads,
                                     num_hidden_layers=layers, intermediate_size=4 * hidden,
                                     hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    trained = sum(p.numel() * p.element_size() for p in model.parameters())
    cast = memory.float32_matmul_bytes(model)
    cells = [{n: p.detach() for n, p in model.named_parameters()}] * k
    masks = engine.pack_model(model, cells, list(range(k)), lora=False)
    model.train()
    measured = _saved_bytes(model, masks, k, 16, seq, bf16)
    estimate = memory.pack_gb(k, trained, 0, layers, hidden, heads, 16, seq, bf16, cast)
    assert abs(estimate.activations_gb * memory.GB / measured - 1) < 0.25, (
        estimate.activations_gb * memory.GB, measured)


def test_with_gradient_checkpointing_the_estimate_bounds_what_is_kept():
    """Only each layer's input is kept (one layer's activations are recomputed at a time in
    the backward): the estimate bounds the forward's saved tensors from above, well below the
    estimate without it."""
    hidden, heads, layers, seq, k = 256, 4, 6, 64, 2
    config = transformers.BertConfig(num_labels=2, hidden_size=hidden, num_attention_heads=heads,
                                     num_hidden_layers=layers, intermediate_size=4 * hidden)
    model = transformers.BertForSequenceClassification(config)
    trained = sum(p.numel() * p.element_size() for p in model.parameters())
    masks = engine.pack_model(model, [{n: p.detach() for n, p in model.named_parameters()}] * k,
                              [1, 2], lora=False)
    model.gradient_checkpointing_enable({"use_reentrant": False})
    model.train()
    measured = _saved_bytes(model, masks, k, 16, seq, False)
    with_ = memory.pack_gb(k, trained, 0, layers, hidden, heads, 16, seq, False,
                           checkpointing=True).activations_gb * memory.GB
    without = memory.pack_gb(k, trained, 0, layers, hidden, heads, 16, seq, False)
    assert measured <= with_ < without.activations_gb * memory.GB / 2, (measured, with_)
