"""BERTAdam (no bias correction) against hand-computed numbers, a numpy reference and AdamW."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from steadytune.stabilizers.bias_correction import BERTAdam, build_optimizer

LR, BETAS, EPS = 0.1, (0.9, 0.999), 1e-6
GRAD = [0.5, -2.0, 0.001]


def one_step(optimizer_cls, **kwargs) -> torch.Tensor:
    """Return the change of a float64 parameter after one step with gradient GRAD."""
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64))
    start = p.detach().clone()
    optimizer = optimizer_cls([p], **kwargs)
    p.grad = torch.tensor(GRAD, dtype=torch.float64)
    optimizer.step()
    return (start - p.detach())


def test_first_step_hand_computed() -> None:
    # AdamW step 1: lr * g / (|g| + eps), i.e. ~ lr * sign(g)
    adamw = one_step(torch.optim.AdamW, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0)
    assert adamw.tolist() == pytest.approx([0.0999998000004, -0.099999950000025, 0.0999000999000999], rel=1e-12)
    # BERTAdam step 1: lr * (1 - b1) * g / (sqrt(1 - b2) * |g| + eps), i.e. ~ 3.16 * lr * sign(g)
    bert = one_step(BERTAdam, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0)
    assert bert.tolist() == pytest.approx([0.316207767281669, -0.316222766095894, 0.306534300317155], rel=1e-12)


def test_first_step_is_adamw_without_bias_correction() -> None:
    # with eps = 0 the ratio is exactly the dropped correction (1 - b1) / sqrt(1 - b2) = 0.316227766... / 0.1
    adamw = one_step(torch.optim.AdamW, lr=LR, betas=BETAS, eps=0.0, weight_decay=0.0)
    bert = one_step(BERTAdam, lr=LR, betas=BETAS, eps=0.0, weight_decay=0.0)
    torch.testing.assert_close(bert, adamw * 3.16227766016838, rtol=1e-12, atol=0.0)


def numpy_bertadam(p0: np.ndarray, grads: list[np.ndarray], lr: float, b1: float, b2: float, eps: float,
                   wd: float) -> np.ndarray:
    """Devlin et al.'s AdamWeightDecayOptimizer, written from its formulas."""
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (np.sqrt(v) + eps) + wd * p)
    return p


def test_several_steps_match_numpy_reference_per_group() -> None:
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 4)), rng.normal(size=5)]
    grads = [[rng.normal(size=s.shape) for _ in range(7)] for s in start]
    settings = [dict(lr=0.01, weight_decay=0.1), dict(lr=0.003, weight_decay=0.0)]
    params = [torch.nn.Parameter(torch.tensor(s)) for s in start]
    optimizer = BERTAdam([{"params": [p], **kw} for p, kw in zip(params, settings)], betas=(0.8, 0.99), eps=1e-8)
    for step in range(7):
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g[step])
        optimizer.step()
    for p, s, g, kw in zip(params, start, grads, settings):
        expected = numpy_bertadam(s, g, kw["lr"], 0.8, 0.99, 1e-8, kw["weight_decay"])
        np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-12, atol=1e-14)
    assert optimizer.state[params[0]]["step"] == 7


def test_weight_decay_alone_matches_adamw() -> None:
    # zero gradient: both optimizers only decay, p <- p * (1 - lr * wd): 2.0 -> 1.9 -> 1.805
    for cls in (BERTAdam, torch.optim.AdamW):
        p = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
        optimizer = cls([p], lr=0.1, weight_decay=0.5)
        p.grad = torch.zeros_like(p)
        optimizer.step()
        assert p.item() == pytest.approx(1.9, rel=1e-12)
        optimizer.step()
        assert p.item() == pytest.approx(1.805, rel=1e-12)


def test_weight_decay_uses_old_weight_and_is_scaled_by_lr() -> None:
    # one step with wd: delta = lr * (step1 update + wd * p_old); p_old = [1, -1, 3]
    plain = one_step(BERTAdam, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0)
    decayed = one_step(BERTAdam, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.01)
    torch.testing.assert_close(decayed - plain, torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64) * LR * 0.01,
                               rtol=1e-9, atol=1e-15)


def test_closure_contract() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = BERTAdam([p], lr=0.1)
    calls = []

    def closure() -> torch.Tensor:
        calls.append(torch.is_grad_enabled())
        optimizer.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert calls == [True] and loss.item() == pytest.approx(5.0)
    assert p.detach().tolist() != [1.0, 2.0]
    assert optimizer.step() is None


def test_parameter_without_grad_is_skipped() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = BERTAdam([a, b], lr=0.1, weight_decay=0.1)
    a.grad = torch.ones(2)
    optimizer.step()
    assert torch.equal(b.detach(), torch.ones(2)) and b not in optimizer.state


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    grads = [torch.randn(4) for _ in range(5)]
    first = torch.nn.Parameter(torch.randn(4))
    optimizer = BERTAdam([first], lr=0.05, weight_decay=0.01)
    for g in grads[:3]:
        first.grad = g.clone()
        optimizer.step()
    second = torch.nn.Parameter(first.detach().clone())
    restored = BERTAdam([second], lr=0.05, weight_decay=0.01)
    buffer = io.BytesIO()  # through bytes, like a checkpoint (load_state_dict alone shares the state tensors)
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer))
    assert restored.state[second]["step"] == 3
    for g in grads[3:]:
        for p, opt in ((first, optimizer), (second, restored)):
            p.grad = g.clone()
            opt.step()
    assert torch.equal(first.detach(), second.detach())


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(eps=-1e-8), dict(betas=(1.0, 0.999)),
                                    dict(betas=(0.9, -0.1)), dict(weight_decay=-0.1)])
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BERTAdam([torch.nn.Parameter(torch.ones(1))], **kwargs)


def test_sparse_gradients_rejected() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = BERTAdam([p])
    p.grad = torch.ones(3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()


def test_build_optimizer() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    groups = [{"params": [a], "weight_decay": 0.01, "name": "decay"}, {"params": [b], "name": "no_decay"}]
    adamw = build_optimizer("adamw", groups, lr=2e-5, betas=(0.9, 0.999), eps=1e-6)
    assert type(adamw) is torch.optim.AdamW
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.01, 0.0]
    assert [g["name"] for g in adamw.param_groups] == ["decay", "no_decay"]
    assert adamw.param_groups[0]["eps"] == 1e-6 and adamw.param_groups[0]["lr"] == 2e-5
    bert = build_optimizer("bertadam", [{"params": [a]}], lr=1e-3, betas=(0.8, 0.9), eps=1e-7)
    assert type(bert) is BERTAdam and bert.param_groups[0]["betas"] == (0.8, 0.9)
    assert bert.param_groups[0]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        build_optimizer("sgd", [{"params": [a]}], lr=1e-3, betas=(0.9, 0.999), eps=1e-6)
