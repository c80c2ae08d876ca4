"""First-token readout: the top layer runs for token 0 only, and the logits stay those of the full forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_classifier
from transformers import AutoModelForSequenceClassification

from steadytune.data.encoding import collate
from steadytune.data.tasks import get_task
from steadytune.models.architecture import encoder_layout
from steadytune.models.readout import first_token_readout
from steadytune.training.evaluation import evaluate


def padded_batch(vocab: int = 100, lengths=(9, 5, 7, 3)) -> dict[str, torch.Tensor]:
    """Random ids with right padding of different lengths, so the mask matters."""
    generator = torch.Generator().manual_seed(0)
    longest = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), longest), generator=generator)
    mask = (torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def top_layer_rows(model, batch) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Logits, and the shape of what the top layer's feed-forward block received."""
    seen = []
    hook = encoder_layout(model).layers[-1].intermediate.register_forward_hook(
        lambda module, args, output: seen.append(tuple(args[0].shape)))
    try:
        with torch.inference_mode():
            logits = model(**batch).logits
    finally:
        hook.remove()
    return logits, seen[0]


@pytest.mark.parametrize("model_type", ["bert", "roberta", "electra"])
def test_readout_computes_the_first_token_only_and_keeps_the_logits(model_type):
    torch.manual_seed(0)
    model = tiny_classifier(model_type).eval()
    batch = padded_batch()
    full, full_rows = top_layer_rows(model, batch)
    with first_token_readout(model) as applied:
        readout, readout_rows = top_layer_rows(model, batch)
    assert applied
    assert full_rows == (4, 9, 16) and readout_rows == (4, 1, 16)  # the top layer really skips 8 of 9 positions
    torch.testing.assert_close(readout, full, rtol=0, atol=1e-6)
    # Leaving the block restores Hugging Face's forward.
    assert "forward" not in vars(encoder_layout(model).layers[-1])
    assert torch.equal(top_layer_rows(model, batch)[0], full)


def test_padding_is_still_masked_in_the_readout():
    """Changing the ids behind the padding changes nothing, with or without the readout."""
    model = tiny_classifier("bert").eval()
    batch = padded_batch()
    noisy = dict(batch, input_ids=torch.where(batch["attention_mask"].bool(), batch["input_ids"], 42))
    with first_token_readout(model), torch.inference_mode():
        torch.testing.assert_close(model(**noisy).logits, model(**batch).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_type", ["mpnet", "albert"])
def test_other_architectures_run_their_full_forward(model_type):
    model = tiny_classifier(model_type).eval()
    batch = padded_batch()
    with torch.inference_mode():
        full = model(**batch).logits
    with first_token_readout(model) as applied, torch.inference_mode():
        assert not applied
        assert torch.equal(model(**batch).logits, full)


def test_readout_refuses_training_mode():
    model = tiny_classifier("bert").train()
    with first_token_readout(model), pytest.raises(RuntimeError, match="evaluation"):
        model(**padded_batch())
    assert "forward" not in vars(encoder_layout(model).layers[-1])  # restored after the error too


def test_real_minilm_predictions_are_unchanged(minilm_path, glue_dir):
    """The real pretrained weights (cut to 2 layers) on real RTE dev examples: same predictions, same loss."""
    from steadytune.data.datasets import load_glue
    from steadytune.data.encoding import encode
    from steadytune.models.loading import load_tokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_hidden_layers=2, num_labels=2).eval()
    task = get_task("rte")
    data = encode(load_glue(glue_dir, task, "dev"), load_tokenizer(str(minilm_path)), 128, None).select(range(64))
    batch = collate(data, np.arange(16), 0, False)
    full, _ = top_layer_rows(model, batch)
    with first_token_readout(model):
        readout, _ = top_layer_rows(model, batch)
    assert (readout - full).abs().max() < 1e-5
    assert torch.equal(readout.argmax(-1), full.argmax(-1))
    # evaluate() uses the readout; its loss matches a plain full forward over the same batches.
    metrics = evaluate(model, data, task, 16, torch.device("cpu"), 0)
    order = np.argsort(data.lengths, kind="stable")
    with torch.inference_mode():
        losses = [model(**collate(data, order[s:s + 16], 0, False)).loss.item() * len(order[s:s + 16])
                  for s in range(0, 64, 16)]
    assert metrics["loss"] == pytest.approx(sum(losses) / 64, abs=1e-6)


def test_eager_attention_masks_work_and_other_kernels_keep_the_full_forward():
    model = tiny_classifier("bert").eval()
    model.set_attn_implementation("eager")  # a float additive mask instead of a boolean one
    batch = padded_batch()
    full, _ = top_layer_rows(model, batch)
    with first_token_readout(model) as applied:
        readout, rows = top_layer_rows(model, batch)
    assert applied and rows == (4, 1, 16)
    torch.testing.assert_close(readout, full, rtol=0, atol=1e-6)
    model.config._attn_implementation = "flash_attention_2"  # only inspected, never run here
    with first_token_readout(model) as applied:
        assert not applied
