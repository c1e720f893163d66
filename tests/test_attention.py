"""Attention kernels against the plain band-mask SDPA they replace, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

from ettin.attention import Varlen, attend, band_mask, layer_reach
from ettin.attention_cpu import local_attention_blocked, use_blocked


def _qkv(B, T, h=2, D=8, dtype=torch.float32):
    return [torch.randn(B, h, T, D, dtype=dtype, requires_grad=True) for _ in range(3)]


def _reference(q, k, v, left, right, key_valid=None):
    T = q.shape[2]
    mask = band_mask(T, T, min(left, T), min(right, T), q.device)[None, None]
    if key_valid is not None:
        mask = mask & key_valid[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("T", [32, 33, 47, 64, 100])
@pytest.mark.parametrize("window", [(8, 8), (7, 0), (5, 5), (3, 0)])
def test_blocked_local_attention_equals_band_mask(T, window):
    left, right = window
    q, k, v = _qkv(3, T)
    got = local_attention_blocked(q, k, v, left, right)
    ref = _reference(q, k, v, left, right)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(ref)
    g_got = torch.autograd.grad((got * w).sum(), (q, k, v))
    g_ref = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_blocked_local_attention_with_padding_keys_stays_finite():
    """Padded rows (as in a varlen bucket): valid queries match the reference; gradients stay finite."""
    T, left, right = 40, 8, 8
    q, k, v = _qkv(3, T)
    lengths = torch.tensor([40, 17, 3])
    valid = torch.arange(T)[None] < lengths[:, None]
    got = local_attention_blocked(q, k, v, left, right, key_valid=valid)
    ref = _reference(q, k, v, left, right, key_valid=valid)
    sel = valid[:, None, :, None].expand_as(got)
    torch.testing.assert_close(got[sel], ref[sel], atol=1e-5, rtol=1e-5)
    w = torch.randn_like(ref) * sel  # padding outputs are discarded: no gradient flows from them
    g_got = torch.autograd.grad((got * w).sum(), (q, k, v))
    g_ref = torch.autograd.grad((ref.nan_to_num() * w).sum(), (q, k, v))
    for a, b in zip(g_got, g_ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_blocked_path_is_taken_only_where_it_pays():
    assert use_blocked(512, 64, 64) and use_blocked(512, 63, 0)
    assert not use_blocked(128, 64, 64)  # short: one band-mask SDPA call
    big = layer_reach(False, False, (64, 64))
    assert not use_blocked(8192, *big)  # global layers never


@pytest.mark.parametrize("causal", [False, True])
def test_attend_varlen_uses_blocks_and_matches_per_document(causal):
    """Packed documents, one long enough for the blocked path: each equals attention on its own."""
    reach = layer_reach(causal, True, (3, 0) if causal else (4, 4))
    lengths = [80, 7, 23]
    assert use_blocked(80, *reach) and not use_blocked(23, *reach)
    N, h, D = sum(lengths), 2, 8
    q, k, v = (torch.randn(N, h, D) for _ in range(3))
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    out = attend(q, k, v, causal=causal, reach=reach, backend="cpu", varlen=Varlen(cu, max(lengths)))
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        qd, kd, vd = (x[s:e].transpose(0, 1)[None] for x in (q, k, v))
        ref = _reference(qd, kd, vd, *reach)[0].transpose(0, 1)
        torch.testing.assert_close(out[s:e], ref, atol=1e-5, rtol=1e-5)


def test_rope_qkv_matches_rotate_half_formula_and_its_gradient():
    """RoPE on the fused projection (a custom autograd function) against transformers' formula
    x cos + rotate_half(x) sin on the q and k slices, v passed as is, in float64: forward, gradcheck, and the
    gradient when only some outputs reach the loss."""
    from ettin.attention import rope_cos_sin, rope_qkv

    qkv = torch.randn(3, 10, 3, 4, 8, dtype=torch.float64, requires_grad=True)  # (B, T, [q|k|v], heads, D)
    cos, sin = (t.double() for t in rope_cos_sin(torch.arange(10)[None].expand(3, 10), 8, 10_000.0))

    def rotate_half(x):
        return torch.cat((-x[..., 4:], x[..., :4]), dim=-1)

    def formula(x):  # (q, k, v) by transformers' formula
        c, s = cos[:, :, None, None], sin[:, :, None, None]
        qk = x[..., :2, :, :]
        return (*(qk * c + rotate_half(qk) * s).unbind(-3), x[..., 2, :, :])

    for a, b in zip(rope_qkv(qkv, cos, sin), formula(qkv)):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda x: rope_qkv(x, cos, sin), (qkv,))
    (g,) = torch.autograd.grad(rope_qkv(qkv, cos, sin)[1].sum(), qkv)  # k only
    (ref,) = torch.autograd.grad(formula(qkv)[1].sum(), qkv)
    torch.testing.assert_close(g, ref)
    # (T, D) cos/sin broadcast over the batch, as the dense path passes them
    cos1, sin1 = (t.double() for t in rope_cos_sin(torch.arange(10), 8, 10_000.0))
    for a, b in zip(rope_qkv(qkv, cos1, sin1), rope_qkv(qkv, cos, sin)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mask_kind", ["none", "causal", "keys", "band+keys"])
def test_attention_bmm_equals_sdpa_and_passes_gradcheck(mask_kind):
    """The held-probabilities kernel (low precision on CPU) against SDPA in float64, forward and backward."""
    from ettin.attention_cpu import attention_bmm

    B, h, T, D = 2, 3, 12, 4
    q, k, v = (torch.randn(B, h, T, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
    valid = torch.arange(T)[None] < torch.tensor([T, 5])[:, None]
    mask = {
        "none": None,
        "causal": band_mask(T, T, T, 0, q.device),
        "keys": valid[:, None, None, :],
        "band+keys": band_mask(T, T, 3, 2, q.device)[None, None] & valid[:, None, None, :],
    }[mask_kind]
    got = attention_bmm(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    seen = torch.ones(B, h, T, 1, dtype=torch.bool) if mask is None else mask.any(-1, keepdim=True).expand(B, h, T, 1)
    assert torch.isfinite(got).all()  # rows that see no key (padding queries) get a finite fill, outputs discarded
    got, ref = got * seen, ref.nan_to_num() * seen
    torch.testing.assert_close(got, ref)
    w = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((got * w).sum(), (q, k, v)), torch.autograd.grad((ref * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, b)
    small = [x.detach()[:1, :1, :5].requires_grad_() for x in (q, k, v)]
    m = None if mask is None else mask[..., :5, :5][:1]
    assert torch.autograd.gradcheck(lambda a, b, c: attention_bmm(a, b, c, m), small)


@pytest.mark.parametrize("T", [256, 300])
@pytest.mark.parametrize("mask_kind", ["causal", "window+keys"])
def test_causal_blocks_equal_one_call(T, mask_kind):
    """`attention_bmm_causal` runs the queries in blocks, each against the keys up to its end: equal to the held
    kernel over the whole square and to SDPA (float64, forward and gradients), also where T is no multiple of the
    block and with a window and padded keys on top of the causal mask."""
    from ettin.attention_cpu import _causal_block, attention_bmm, attention_bmm_causal

    assert _causal_block(T) < T // 2  # it does split
    B, h, D = 2, 2, 8
    q, k, v = (torch.randn(B, h, T, D, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = band_mask(T, T, T, 0, q.device)
    if mask_kind == "window+keys":
        valid = torch.arange(T)[None] < torch.tensor([T, T - 37])[:, None]
        mask = band_mask(T, T, 100, 0, q.device)[None, None] & valid[:, None, None, :]
    got = attention_bmm_causal(q, k, v, mask)
    one = attention_bmm(q, k, v, mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(got, one)
    torch.testing.assert_close(got, ref)
    w = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((got * w).sum(), (q, k, v)), torch.autograd.grad((ref * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("T", [96, 320])  # 320: causal layers run in query blocks
@pytest.mark.parametrize("causal", [False, True])
def test_low_precision_attend_on_cpu_holds_scores_and_stays_close_to_fp32(causal, T):
    """bf16 on CPU takes the held-scores kernel for global layers (dense and varlen); it stays within bf16 rounding
    of fp32 SDPA, forward and backward."""
    from ettin.attention_cpu import use_held_scores

    B, h, D = 2, 2, 16
    q, k, v = (torch.randn(B, T, h, D) for _ in range(3))
    reach = layer_reach(causal, False, (8, 8))
    assert use_held_scores(q.to(torch.bfloat16).transpose(1, 2), 0.0)
    assert not use_held_scores(q.transpose(1, 2), 0.0)  # fp32 keeps SDPA
    lo = [x.to(torch.bfloat16).requires_grad_() for x in (q, k, v)]
    hi = [x.clone().requires_grad_() for x in (q, k, v)]
    out_lo = attend(*lo, causal=causal, reach=reach, backend="cpu")
    out_hi = attend(*hi, causal=causal, reach=reach)
    torch.testing.assert_close(out_lo.float(), out_hi, atol=3e-2, rtol=3e-2)
    w = torch.randn_like(out_hi)
    g_lo = torch.autograd.grad((out_lo.float() * w).sum(), lo)
    g_hi = torch.autograd.grad((out_hi * w).sum(), hi)
    for a, b in zip(g_lo, g_hi):
        assert (a.float() - b).abs().max() < 0.05 * b.abs().max()
    # varlen: two packed documents, the same kernel per bucket, each document equal to its own attention
    cu = torch.tensor([0, T, T + 54], dtype=torch.int32)
    flat = [x.reshape(-1, h, D)[: T + 54] for x in lo]
    got = attend(*flat, causal=causal, reach=reach, backend="cpu", varlen=Varlen(cu, T))
    for s, e in ((0, T), (T, T + 54)):
        one = attend(*(x[s:e][None] for x in flat), causal=causal, reach=reach, backend="cpu")[0]
        torch.testing.assert_close(got[s:e].float(), one.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("causal", [False, True])
def test_low_precision_held_scores_are_as_accurate_as_the_flash_kernel(causal):
    """In bf16 the held-scores kernel forms scores and softmax in fp32, as PyTorch's CPU flash kernel does: against
    float64 its output and gradients are no less accurate than SDPA's on the same bf16 inputs. (Scores rounded
    to bf16, as an eager attention forms them, measured 5-7x SDPA's error here and fail this test.)"""
    from ettin.attention_cpu import attention_bmm

    torch.manual_seed(0)
    B, h, T, D = 2, 2, 128, 32
    base = [torch.randn(B, h, T, D) * 3 for _ in range(3)]  # sharp attention: scores of tens
    w = torch.randn(B, h, T, D)
    mask = band_mask(T, T, T, 0, torch.device("cpu")) if causal else None
    exact = [x.double().requires_grad_() for x in base]
    ref = F.scaled_dot_product_attention(*exact, attn_mask=mask)
    ref_grads = torch.autograd.grad((ref * w.double()).sum(), exact)

    def errors(fn):
        xs = [x.bfloat16().requires_grad_() for x in base]
        out = fn(*xs)
        grads = torch.autograd.grad((out.float() * w).sum(), xs)
        rel = [(out.double() - ref).norm() / ref.norm()]
        rel += [(g.double() - r).norm() / r.norm() for g, r in zip(grads, ref_grads)]
        return torch.stack(rel)

    ours = errors(lambda q, k, v: attention_bmm(q, k, v, mask))
    flash = errors(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    assert (ours <= 1.5 * flash).all(), (ours, flash)


def test_backend_names_mean_what_they_say(monkeypatch):
    """"auto" is the CPU kernels on a CPU device, and on CUDA flash-attn only for fp16/bf16 tensors (flash-attn
    takes no other dtype; fp32 evaluation gets SDPA); "sdpa" stays SDPA; "cpu" refuses other devices."""
    import ettin.attention as attention
    from ettin.attention import resolve_backend

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu) == "cpu" and resolve_backend("auto", cpu, torch.bfloat16) == "cpu"
    assert resolve_backend("sdpa", cpu) == "sdpa" and resolve_backend("cpu", cpu) == "cpu"
    with pytest.raises(ValueError, match="CPU tensors only"):
        resolve_backend("cpu", torch.device("meta"))
    with pytest.raises(ValueError, match="unknown attention backend"):
        resolve_backend("fast", cpu)
    monkeypatch.setattr(attention, "flash_available", lambda: True)  # as on a CUDA machine with flash-attn
    assert resolve_backend("auto", cuda, torch.bfloat16) == "flash"
    assert resolve_backend("auto", cuda, torch.float16) == "flash"
    assert resolve_backend("auto", cuda, torch.float32) == "sdpa"  # was flash: a crash in fp32 evaluation
    with pytest.raises(ValueError, match="fp16/bf16 tensors only"):
        resolve_backend("flash", cuda, torch.float32)
    monkeypatch.setattr(attention, "flash_available", lambda: False)
    assert resolve_backend("auto", cuda, torch.bfloat16) == "sdpa"


@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_backend_runs_sdpa_and_cpu_backend_its_kernels(monkeypatch, causal, varlen):
    """bf16 on CPU, a long local layer and a short global one: the "cpu" backend takes the blocked and the
    held-scores kernels (as "sdpa" did before the split), "sdpa" calls SDPA alone; both agree."""
    import ettin.attention_cpu as kernels

    calls = []
    for name in ("local_attention_blocked", "attention_bmm", "attention_bmm_causal"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _f=real, _n=name, **k: (calls.append(_n), _f(*a, **k))[1])
    h, D = 2, 16
    lengths = [300, 40]
    for local, T in ((True, 300), (False, 96)):
        reach = layer_reach(causal, local, (15, 0) if causal else (16, 16))
        if varlen:
            cu = torch.tensor([0, lengths[0], sum(lengths)], dtype=torch.int32)
            q, k, v = (torch.randn(sum(lengths), h, D, dtype=torch.bfloat16) for _ in range(3))
            kw = dict(varlen=Varlen(cu, max(lengths)))
        else:
            q, k, v = (torch.randn(2, T, h, D, dtype=torch.bfloat16) for _ in range(3))
            kw = {}
        calls.clear()
        ref = attend(q, k, v, causal=causal, reach=reach, backend="sdpa", **kw)
        assert calls == []
        got = attend(q, k, v, causal=causal, reach=reach, backend="cpu", **kw)
        assert calls, "the cpu backend used no kernel of its own"
        assert ("local_attention_blocked" in calls) == local
        torch.testing.assert_close(got.float(), ref.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("local", [False, True])
def test_cached_attention_equals_attention_over_the_whole_sequence(local, static):
    """A left-padded batch: the prompt into an empty cache, a chunk of four tokens, then one token a step (one of
    them a stopped row's padding), through `attend` with a KVCache (its slots so far, or with `static` the one-token
    steps through `step_view`, as a compiled step reads it: every slot, unwritten ones included, under the mask):
    every real query equals causal attention over the whole sequence with the padded keys masked."""
    from ettin.attention import KVCache

    torch.manual_seed(0)
    B, h, D, P, steps = 2, 2, 8, 9, 6
    reach = layer_reach(True, local, (3, 0))
    q, k, v = (torch.randn(B, P + steps, h, D) for _ in range(3))
    valid = torch.ones(B, P + steps, dtype=torch.bool)
    valid[1, :4] = False  # left padding
    valid[1, P + 3] = False  # a token the row fed after it stopped
    cache = KVCache(num_layers=2, batch=B, max_len=P + steps + 1)
    outs, read = [], []
    for s, e in [(0, 5), (5, P)] + [(P + i, P + i + 1) for i in range(steps)]:
        cache.advance(e - s, valid[:, s:e])
        view = KVCache.step_view(cache.slot, cache.visible, cache.layers) if static and s >= P else cache
        read.append(view.length)  # the slots its keys come from
        outs.append(attend(q[:, s:e], k[:, s:e], v[:, s:e], causal=True, reach=reach, cache=view, layer=1))
    assert read[-1] == (P + steps + 1 if static else P + steps)  # the steps read every slot, or those so far
    got = torch.cat(outs, 1)
    ref = _reference(*(x.transpose(1, 2) for x in (q, k, v)), *reach, key_valid=valid).transpose(1, 2)
    torch.testing.assert_close(got[valid], ref[valid], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="full"):
        cache.advance(2)
