"""R3F (Aghajanyan et al. 2021): its loss term against an independent computation, and in a real Trial."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from steadytune.stabilizers.r3f import R3F, symmetric_kl
from steadytune.storage.store import Store
from steadytune.studies.single import run_stored
from steadytune.training.trial import Trial


def test_symmetric_kl_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    p = np.exp(a) / np.exp(a).sum(1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(1, keepdims=True)
    expected = np.mean(np.sum(p * np.log(p / q) + q * np.log(q / p), axis=1))
    assert symmetric_kl(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(expected, rel=1e-6)
    assert symmetric_kl(torch.tensor(a), torch.tensor(a)).item() == pytest.approx(0.0, abs=1e-7)


def test_the_added_term_is_lambda_times_the_kl_to_the_noisy_forward(tiny_trial_config, options):
    from steadytune.data.encoding import collate

    trial = Trial(tiny_trial_config(r3f=2.0, r3f_eps=0.5), options)
    model = trial.model.eval()  # no dropout: the two forwards differ by the noise alone
    batch = collate(trial.inputs.train, np.arange(8), trial.pad_token_id, False)
    with torch.no_grad():
        out = model(**batch)
        torch.manual_seed(3)
        total = R3F(trial.config).change_loss(model, batch, out.loss, out.logits)
        torch.manual_seed(3)
        words = model.get_input_embeddings()(batch["input_ids"])
        noise = (torch.rand(words.shape) * 2 - 1) * 0.5
        noisy = model(inputs_embeds=words + noise, attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"]).logits
    p, q = torch.softmax(out.logits, -1), torch.softmax(noisy, -1)
    kl = ((p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)).mean()
    assert kl > 0
    assert total.item() == pytest.approx(out.loss.item() + 2.0 * kl.item(), rel=1e-5)


def test_r3f_trains_reruns_bit_identically_and_records_the_task_loss(tiny_trial_config, options, tmp_path):
    losses = []
    for name, extra in (("plain", {}), ("r3f", {"r3f": 1.0, "r3f_eps": 0.1}), ("again", {"r3f": 1.0, "r3f_eps": 0.1})):
        with Store(tmp_path / f"{name}.db") as store:
            trial_id, _, _ = run_stored(tiny_trial_config(max_steps=3, **extra), options, store)
            curve = store.curves([trial_id])
            losses.append(curve[(curve["split"] == "train") & (curve["metric"] == "loss")]["value"].to_numpy())
    plain, r3f, again = losses
    assert plain[0] == r3f[0]  # step 1's recorded loss is the task loss, before any update
    assert not np.array_equal(plain, r3f) and np.array_equal(r3f, again)


@pytest.mark.parametrize("overrides, message", [
    (dict(task="stsb", r3f=1.0), "applies to classification tasks, not stsb"),
    (dict(r3f_eps=1e-3), "--r3f-eps and --r3f-noise apply with --r3f"),
])
def test_r3f_options_are_checked(tiny_trial_config, overrides, message):
    with pytest.raises(ValidationError, match=message):
        tiny_trial_config(**overrides)
