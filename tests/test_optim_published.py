"""ettin's optimizer against the published update rule, written out here from its source.

The published runs stepped bert24's StableAdamW (orionw/bert24 @ 9ca0df4, src/optimizer.py; chosen because the
YAMLs set `log_grad_norm`: main.py lines 223-239) with `decouple_lr=True` and no `max_lr` (so optimi's base class
sets max_lr = lr: torch-optimi 0.2.1 optimi/optimizer.py lines 21-22), over timm's two parameter groups (main.py
lines 93-106). `published_step` below is that code, line for line, on plain tensors.
"""

import pytest
import torch

from ettin.config import preset
from ettin.model import EttinModel
from ettin.train.optim import build_optimizer, param_groups
from ettin.train.recipe import TrainSection


def debias_beta(beta, step):  # optimi 0.2.1 optimi/utils.py lines 19-24
    return (beta**step - beta) / (beta**step - 1)


def published_groups(model, weight_decay):  # bert24 main.py lines 93-106 (timm's param_groups_weight_decay)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def published_init_state(param, eps):  # src/optimizer.py lines 89-99 (fp32 parameters: no Kahan compensation)
    return {"exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param),
            "eps_sq": torch.tensor(eps**2, dtype=param.dtype), "kahan_comp": None}


@torch.no_grad()
def published_step(group, state, *, lr, beta1, beta2, eps, max_lr):
    """One group's step: src/optimizer.py lines 223-226 (step, debiased betas) and 269-330 (the foreach body)."""
    params = [p for p in group["params"] if p.grad is not None]
    grads = [p.grad.clone() for p in params]  # the published code uses the gradients as scratch
    exp_avgs = [state[p]["exp_avg"] for p in params]
    exp_avg_sqs = [state[p]["exp_avg_sq"] for p in params]
    eps_sqs = [state[p]["eps_sq"] for p in params]
    weight_decay = group["weight_decay"]
    group["step"] += 1
    beta1_comp = 1 - debias_beta(beta1, group["step"])
    beta2_hat = debias_beta(beta2, group["step"])
    torch._foreach_lerp_(exp_avgs, grads, weight=beta1_comp)
    torch._foreach_mul_(exp_avg_sqs, scalar=beta2_hat)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2_hat)
    max_exp_avg_sqs = torch._foreach_maximum(exp_avg_sqs, other=eps_sqs)
    torch._foreach_pow_(grads, exponent=2)
    torch._foreach_div_(grads, max_exp_avg_sqs)
    if weight_decay != 0:
        neg_lrs, new_wds = [], []
        for r in grads:
            neg_lrs.append(-lr / max(1, r.mean().sqrt().item()))
            new_wds.append(1 + (neg_lrs[-1] / max_lr) * weight_decay)  # decouple_lr=True
        torch._foreach_mul_(params, scalars=new_wds)
    else:
        neg_lrs = [-lr / max(1, r.mean().sqrt().item()) for r in grads]
    torch._foreach_copy_(grads, exp_avg_sqs)
    torch._foreach_sqrt_(grads)
    torch._foreach_add_(grads, eps)
    torch._foreach_addcdiv_(params, exp_avgs, grads, scalars=neg_lrs)


def tiny_model(seed):
    torch.manual_seed(seed)
    return EttinModel(preset("tiny", "mlm", vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                             mask_token_id=3))


def test_groups_are_the_published_ones():
    model = tiny_model(0)
    ours = param_groups(model, 3e-4)
    theirs = published_groups(model, 3e-4)
    key = lambda g: ({id(p) for p in g["params"]}, g["weight_decay"])  # noqa: E731
    assert sorted(map(key, ours), key=lambda k: k[1]) == sorted(map(key, theirs), key=lambda k: k[1])
    assert {p.ndim for p in ours[0]["params"]} == {2}  # every matrix (embeddings included) is decayed


@pytest.mark.parametrize("weight_decay", [3e-4, 1e-5])
def test_steps_match_the_published_rule(weight_decay):
    """Three steps from the same start, at a scheduled LR below the peak (so lr / max_lr matters) and with one
    gradient 50x the others (so the RMS clip acts): the same parameters and state as the published rule."""
    peak = 3e-3
    model, reference = tiny_model(1), tiny_model(1)
    train = TrainSection(lr=peak, weight_decay=weight_decay)
    opt = build_optimizer(model, train)
    groups = published_groups(reference, weight_decay)
    for g in groups:
        g["step"] = 0  # src/optimizer.py lines 129-131: one step counter per group
    state = {p: published_init_state(p, train.eps) for g in groups for p in g["params"]}
    gen = torch.Generator().manual_seed(7)
    clipped = False
    for k, (lr, scale) in enumerate([(peak, 1.0), (0.5 * peak, 50.0), (0.02 * peak, 1.0)]):
        for p, q in zip(model.parameters(), reference.parameters()):
            g = torch.randn(p.shape, generator=gen) * scale * (1e-2 if p.ndim == 1 else 1.0)
            p.grad, q.grad = g.clone(), g.clone()
        if k == 1:  # the published RMS term of the largest gradient exceeds 1: the clip is exercised
            s = state[groups[1]["params"][0]]
            g = groups[1]["params"][0].grad
            sq = s["exp_avg_sq"] * debias_beta(0.98, 2) + g * g * (1 - debias_beta(0.98, 2))
            clipped = (g.pow(2) / sq.maximum(s["eps_sq"])).mean().sqrt().item() > 1
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        for g in groups:
            published_step(g, state, lr=lr, beta1=0.9, beta2=0.98, eps=1e-6, max_lr=peak)
    assert clipped
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(opt.state[p]["exp_avg"], state[q]["exp_avg"], rtol=0, atol=0)
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], state[q]["exp_avg_sq"], rtol=0, atol=0)
        assert opt.state[p]["eps_sq"].item() == state[q]["eps_sq"].item()
    assert [int(g["step"]) for g in opt.param_groups] == [3, 3]


def test_a_wrong_rule_is_caught():
    """The comparison can fail: decay scaled by lr (not lr / max_lr) moves the decayed matrices."""
    peak = 3e-3
    model, reference = tiny_model(2), tiny_model(2)
    opt = build_optimizer(model, TrainSection(lr=peak, weight_decay=3e-4))
    groups = published_groups(reference, 3e-4)
    for g in groups:
        g["step"] = 0
    state = {p: published_init_state(p, 1e-6) for g in groups for p in g["params"]}
    for p, q in zip(model.parameters(), reference.parameters()):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    for group in opt.param_groups:
        group["lr"] = 0.5 * peak
    opt.step()
    for g in groups:
        published_step(g, state, lr=0.5 * peak, beta1=0.9, beta2=0.98, eps=1e-6, max_lr=1.0)  # max_lr wrong
    w, v = opt.param_groups[0]["params"][0], groups[1]["params"][0]
    assert not torch.equal(w, v)
