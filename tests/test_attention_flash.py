"""The flash-attn backend's call convention, on the CPU.

flash-attn's kernels need CUDA, so this test cannot run them. It checks the other half of the backend: that
ettin calls `flash_attn_func` / `flash_attn_varlen_func` with arguments that mean, under flash-attn's documented
semantics, the attention ettin wants (layout, `cu_seqlens`, `window_size`, `causal`). A stand-in module implements
those documented semantics in plain PyTorch, written independently of ettin's masks:

    "Query at position i will only attend to keys between
     [i + seqlen_k - seqlen_q - window_size[0], i + seqlen_k - seqlen_q + window_size[1]] inclusive",
    -1 meaning unbounded; causal masks keys after the query (bottom-right aligned).

The kernel itself is checked on a GPU by scripts/gpu_check.sh.
"""

import sys
import types

import pytest
import torch

import ettin.attention as attention
from ettin.attention import Varlen, attend, layer_reach
from ettin.config import preset
from ettin.model import EttinModel

CALLS: list[dict] = []


def _reference_one(q, k, v, causal, window_size, scale=None):
    """q (Tq, h, D), k/v (Tk, h, D): flash-attn's documented masking, one sequence."""
    Tq, Tk = q.shape[0], k.shape[0]
    i = torch.arange(Tq)[:, None] + (Tk - Tq)
    j = torch.arange(Tk)[None, :]
    allowed = torch.ones(Tq, Tk, dtype=torch.bool)
    left, right = window_size
    if left >= 0:
        allowed &= j >= i - left
    if right >= 0:
        allowed &= j <= i + right
    if causal:
        allowed &= j <= i
    s = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * (scale or q.shape[-1] ** -0.5)
    p = s.masked_fill(~allowed, float("-inf")).softmax(-1)
    return torch.einsum("hqk,khd->qhd", p, v.float()).to(q.dtype)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), **kw):
    CALLS.append(dict(fn="dense", causal=causal, window_size=tuple(window_size)))
    assert q.dtype in (torch.float16, torch.bfloat16), "flash-attn takes fp16/bf16 only"
    assert q.dim() == 4, "flash_attn_func takes (batch, seqlen, nheads, headdim)"
    return torch.stack([_reference_one(q[b], k[b], v[b], causal, window_size, softmax_scale)
                        for b in range(q.shape[0])])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), **kw):
    CALLS.append(dict(fn="varlen", causal=causal, window_size=tuple(window_size)))
    assert q.dtype in (torch.float16, torch.bfloat16), "flash-attn takes fp16/bf16 only"
    assert q.dim() == 3, "flash_attn_varlen_func takes (total_tokens, nheads, headdim)"
    assert cu_seqlens_q.dtype == torch.int32 and cu_seqlens_k.dtype == torch.int32
    assert isinstance(max_seqlen_q, int) and max_seqlen_q == int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max())
    out = torch.empty_like(q)
    for s, e in zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist()):
        out[s:e] = _reference_one(q[s:e], k[s:e], v[s:e], causal, window_size, softmax_scale)
    return out


@pytest.fixture
def fake_flash(monkeypatch):
    mod = types.ModuleType("flash_attn")
    mod.flash_attn_func, mod.flash_attn_varlen_func = flash_attn_func, flash_attn_varlen_func
    monkeypatch.setitem(sys.modules, "flash_attn", mod)
    monkeypatch.setattr(attention, "flash_available", lambda: True)
    CALLS.clear()
    yield CALLS


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("local", [False, True])
def test_flash_calls_mean_what_sdpa_computes(fake_flash, causal, local):
    """bf16 inputs (flash-attn takes no fp32); the reference is SDPA on the same values in fp32, so only the output's
    bf16 rounding separates them (a wrong window or layout would differ by order 1)."""
    reach = layer_reach(causal, local, (7, 0) if causal else (8, 8))
    B, T, h, D = 2, 40, 2, 8
    q, k, v = (torch.randn(B, T, h, D).bfloat16() for _ in range(3))

    def close(a, b):
        torch.testing.assert_close(a.float(), b, atol=2e-2, rtol=0)

    close(attend(q, k, v, causal=causal, reach=reach, backend="flash"),
          attend(q.float(), k.float(), v.float(), causal=causal, reach=reach, backend="sdpa"))
    lengths = [40, 9, 23]
    cu = torch.tensor([0, 40, 49, 72], dtype=torch.int32)
    qv, kv, vv = (torch.randn(sum(lengths), h, D).bfloat16() for _ in range(3))
    vl = Varlen(cu, max(lengths))
    close(attend(qv, kv, vv, causal=causal, reach=reach, backend="flash", varlen=vl),
          attend(qv.float(), kv.float(), vv.float(), causal=causal, reach=reach, backend="sdpa", varlen=vl))
    expected = (reach[0] if local else -1, 0 if causal else (reach[1] if local else -1))
    assert [c["window_size"] for c in fake_flash] == [expected, expected]
    assert all(c["causal"] == causal for c in fake_flash)


def test_flash_refuses_fp32_and_auto_passes_it_to_sdpa(fake_flash):
    """flash-attn has no fp32 kernel: an explicit flash backend with fp32 tensors is an error naming the fix, and
    "auto" (here on CPU: the CPU kernels) never hands fp32 to it."""
    q = k = v = torch.randn(1, 16, 2, 8)
    with pytest.raises(ValueError, match="fp16/bf16 tensors only"):
        attend(q, k, v, causal=False, reach=layer_reach(False, False, (8, 8)), backend="flash")
    assert attend(q, k, v, causal=False, reach=layer_reach(False, False, (8, 8)), backend="auto").dtype == q.dtype
    assert not fake_flash


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_model_with_flash_backend_matches_sdpa(fake_flash, objective):
    """The model under bf16 autocast (what a bf16 run is) on the flash backend gives SDPA's logits."""
    cfg = preset("tiny", objective, vocab_size=128, local_attention=16, pad_token_id=3, bos_token_id=1,
                 eos_token_id=2, mask_token_id=4)
    m = EttinModel(cfg).eval()
    ids = torch.randint(5, 128, (2, 48))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        m.attn_backend = "sdpa"
        ref = m(ids, attention_mask=mask).logits.float()
        m.attn_backend = "flash"
        got = m(ids, attention_mask=mask).logits.float()
    real = mask.bool()
    torch.testing.assert_close(got[real], ref[real], atol=5e-2, rtol=0)
    assert {c["fn"] for c in fake_flash} == {"varlen"} and len(fake_flash) == cfg.num_layers
