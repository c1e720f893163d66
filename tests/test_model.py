import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from ettin.config import SIZES, ModelConfig, preset
from ettin.losses import linear_cross_entropy
from ettin.model import EttinModel

SPECIAL = dict(pad_token_id=3, bos_token_id=1, eos_token_id=2, mask_token_id=4)


def tiny(objective="mlm", **kw):
    kw = {**dict(vocab_size=128, local_attention=8), **SPECIAL, **kw}
    return EttinModel(preset("tiny", objective, **kw)).eval()


@pytest.mark.parametrize(
    "size,backbone,with_head",
    [("17m", 16.80, 16.91), ("32m", 31.88, 32.08), ("68m", 68.14, 68.46), ("150m", 149.01, 149.66),
     ("400m", 394.78, 395.88), ("1b", 1028.05, 1031.31)],
)
def test_preset_parameter_counts_match_reference(size, backbone, with_head):
    cfg = preset(size)
    assert round(cfg.num_parameters(with_head=False) / 1e6, 2) == backbone
    assert round(cfg.num_parameters() / 1e6, 2) == with_head


def test_module_parameter_count_matches_formula():
    for obj in ("mlm", "clm"):
        cfg = preset("17m", obj)
        with torch.device("meta"):
            m = EttinModel(cfg)
        assert sum(p.numel() for p in m.parameters()) == cfg.num_parameters()  # tied decoder counted once
    assert set(SIZES) >= {"17m", "32m", "68m", "150m", "400m", "1b", "tiny"}


def test_layer_pattern_and_objective_switch():
    cfg = preset("150m")
    assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == list(range(0, 22, 3))
    assert cfg.window == (64, 64) and preset("150m", "clm").window == (63, 0)
    with pytest.raises(ValueError, match="objective"):
        ModelConfig(objective="seq2seq")
    with pytest.raises(ValueError, match="pad_token_id"):
        preset("tiny", vocab_size=100)  # default special ids are outside a 100-token vocabulary


def test_init_follows_modernbert():
    m = EttinModel(preset("17m", vocab_size=4096, pad_token_id=3, bos_token_id=1, eos_token_id=2,
                          mask_token_id=4))
    std_out = 0.02 / math.sqrt(2 * 7)
    w_in, w_out = m.layers[1].attn.Wqkv.weight, m.layers[1].mlp.Wo.weight
    assert w_in.abs().max() <= 2 * 0.02 + 1e-6 and w_out.abs().max() <= 2 * std_out + 1e-6
    # truncated at 2 std, the std shrinks by ~0.88
    assert 0.80 * 0.02 < w_in.std() < 0.95 * 0.02
    assert 0.80 * std_out < w_out.std() < 0.95 * std_out
    assert torch.all(m.decoder_bias == 0) and torch.all(m.final_norm.weight == 1)
    assert isinstance(m.layers[0].attn_norm, torch.nn.Identity)
    assert not isinstance(m.layers[1].attn_norm, torch.nn.Identity)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_padding_does_not_change_real_tokens(objective):
    m = tiny(objective)
    a = torch.randint(5, 128, (1, 30))
    b = torch.randint(5, 128, (1, 20))
    batch = torch.full((2, 30), 3)
    batch[0], batch[1, :20] = a[0], b[0]
    mask = (batch != 3).long()
    mask[0] = 1
    with torch.no_grad():
        out = m(batch, attention_mask=mask).logits
        ref_a, ref_b = m(a).logits, m(b).logits
    torch.testing.assert_close(out[0], ref_a[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :20], ref_b[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_packed_documents_never_attend_across_boundaries(objective):
    m = tiny(objective)
    docs = [torch.randint(5, 128, (n,)) for n in (7, 25, 12)]
    ids = torch.cat(docs)[None]
    pos = torch.cat([torch.arange(len(d)) for d in docs])[None]
    with torch.no_grad():
        packed = m(ids, position_ids=pos).logits[0]
        alone = torch.cat([m(d[None]).logits[0] for d in docs])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_sdpa_and_flex_backends_agree(objective):
    """The model on the (compiled) flex backend gives SDPA's logits: dense, padded and packed. Fails, never skips."""
    m = tiny(objective)
    ids = torch.randint(5, 128, (2, 24))
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[1, 15:] = 0
    pos = torch.cat([torch.arange(10), torch.arange(14)])[None].expand(2, -1)
    with torch.no_grad():
        ref = [m(ids).logits, m(ids, attention_mask=mask).logits, m(ids, position_ids=pos).logits]
        m.attn_backend = "flex"
        got = [m(ids).logits, m(ids, attention_mask=mask).logits, m(ids, position_ids=pos).logits]
    for r, g, sel in zip(ref, got, [slice(None), mask.bool(), slice(None)]):
        torch.testing.assert_close(g[sel], r[sel], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("n", [1, 7, 300])
def test_fused_linear_cross_entropy_matches_plain(n):
    x = torch.randn(n, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    b = torch.randn(50, requires_grad=True)
    t = torch.randint(0, 50, (n,))
    t[::3] = -100
    if (t != -100).sum() == 0:
        t[0] = 5
    loss = linear_cross_entropy(x, w, b, t, chunk_size=64)
    ref = F.cross_entropy(F.linear(x, w, b), t, ignore_index=-100)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    g = torch.autograd.grad(loss * 3, (x, w, b))
    gr = torch.autograd.grad(ref * 3, (x, w, b))
    for a, r in zip(g, gr):
        torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("confident", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_linear_cross_entropy_bf16_matches_float64_on_the_same_logits(confident, with_bias):
    """Under bf16 autocast the head's matmul rounds the logits to bf16; from there on the fused loss must match
    the exact (float64) loss and logit gradient of those logits, also for confident targets (p_t close to 1,
    where p_t - 1 would cancel if formed from a rounded p_t), and the bias gradient."""
    n, V = 40, 64
    t = torch.randint(0, V, (n,))
    w = torch.eye(V).requires_grad_()  # logits = x (+ b) exactly, so the bf16 logits are known
    x = torch.randn(n, V) * 2
    if confident:
        x[torch.arange(n), t] += 14.0  # p_t ~ 1 - 5e-5: per-token loss ~5e-5
    x = x.bfloat16().float().requires_grad_()
    b = (torch.randn(V) * 0.5).bfloat16().float().requires_grad_() if with_bias else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(x, w, b, t, chunk_size=16)  # 32 bf16 rows a chunk: two chunks
    grads = torch.autograd.grad(loss, (x, w, b) if with_bias else (x, w))
    xd = x.detach().double().requires_grad_()
    logits = (xd + b.detach().double()).bfloat16().double() if with_bias else xd  # as the bf16 matmul rounds
    ref = F.cross_entropy(logits, t)
    (gref,) = torch.autograd.grad(ref, (xd,))
    torch.testing.assert_close(loss.double(), ref.detach(), rtol=5e-3, atol=0)
    rows = torch.arange(n)
    gx = grads[0]
    # the target entries carry the signal: relative precision even when they are tiny
    torch.testing.assert_close(gx[rows, t].double(), gref[rows, t], rtol=1e-2, atol=0)
    torch.testing.assert_close(gx.double(), gref, rtol=1e-2, atol=1e-3 / n)
    # d loss / d W = (d loss / d logits)^T x, accumulated over both chunks in fp32
    gw_ref = gref.t() @ x.detach().double()
    torch.testing.assert_close(grads[1].double(), gw_ref, rtol=2e-2, atol=2e-2 * gw_ref.abs().max().item())
    if with_bias:  # d loss / d b = column sums of d loss / d logits
        torch.testing.assert_close(grads[2].double(), gref.sum(0), rtol=2e-2, atol=1e-3 / n)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_sparse_loss_equals_dense_loss_and_gradients(objective):
    m = tiny(objective).train()
    ids = torch.randint(5, 128, (2, 32))
    labels = torch.full_like(ids, -100)
    sel = torch.rand(ids.shape) < 0.3
    labels[sel] = torch.randint(5, 128, (int(sel.sum()),))
    sparse = m(ids, labels=labels)
    g_sparse = torch.autograd.grad(sparse.loss, list(m.parameters()))
    dense = m(ids, labels=labels, return_logits=True)
    g_dense = torch.autograd.grad(dense.loss, list(m.parameters()))
    torch.testing.assert_close(sparse.loss, dense.loss, atol=1e-5, rtol=1e-5)
    assert sparse.num_targets == int(sel.sum()) and sparse.logits is None
    for a, b in zip(g_sparse, g_dense):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_bf16_autocast_trains(objective):
    m = tiny(objective).train()
    ids = torch.randint(5, 128, (2, 32))
    labels = ids.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(ids, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    fp32 = m(ids, labels=labels).loss
    assert abs(out.loss.item() - fp32.item()) < 0.05 * fp32.item()


def test_meta_build_then_init():
    cfg = preset("tiny", vocab_size=128, **SPECIAL)
    with torch.device("meta"):
        m = EttinModel(cfg)
    assert all(p.is_meta for p in m.parameters())
    m.to_empty(device="cpu")
    m.init_weights()
    assert torch.isfinite(m(torch.randint(5, 128, (1, 8))).logits).all()


@pytest.mark.parametrize("objective", ["mlm", "clm"])
@pytest.mark.parametrize("window,longest", [(8, 70), (16, 60)])  # local layers blocked / one band-mask SDPA call
def test_padded_batch_gradients_equal_per_sequence_gradients(objective, window, longest):
    """Padding (short rows whose padding queries see no real key in their window) adds nothing to the gradients:
    a padded batch gives the gradients of its sequences run one by one."""
    m = tiny(objective, local_attention=window).train()
    lengths = [longest, 3, 41]
    ids = torch.randint(5, 128, (3, longest))
    mask = (torch.arange(longest)[None] < torch.tensor(lengths)[:, None]).long()
    labels = torch.where(mask.bool() & (torch.rand(ids.shape) < 0.5), ids, torch.full_like(ids, -100))
    labels[:, 0] = ids[:, 0]
    params = list(m.parameters())
    out = m(ids, attention_mask=mask, labels=labels)
    g_batch = torch.autograd.grad(out.loss * out.num_targets, params)
    g_each = [torch.zeros_like(p) for p in params]
    for i, n in enumerate(lengths):
        o = m(ids[i : i + 1, :n], labels=labels[i : i + 1, :n])
        for acc, g in zip(g_each, torch.autograd.grad(o.loss * o.num_targets, params)):
            acc += g
    for a, b in zip(g_batch, g_each):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_cli_tunes_cpu_allocator_so_repeated_large_tensors_stop_faulting():
    """Every `ettin` command tunes glibc malloc (ettin.cpu): a 64 MB tensor made again and again is then served
    from the heap without page faults; ETTIN_MALLOC=default leaves glibc as shipped (a fresh mmap, 16k faults a
    time). Counted with getrusage in subprocesses, as the settings are process-wide."""
    import subprocess

    probe = (
        "import resource, torch\n"
        "from ettin.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "counts = []\n"
        "for _ in range(7):\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    torch.ones(16 << 20)\n"
        "    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
        "print(sorted(counts)[3])\n"  # the median: the heap's first growths fault once
    )

    def faults(mode: str) -> float:
        env = {**os.environ, "ETTIN_MALLOC": mode}
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    import ctypes

    if not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"):
        pytest.skip("not glibc")
    assert faults("tuned") < 1000
    assert faults("default") > 10000


def test_layer_pattern_has_one_source():
    """`layer_types` is the pattern (a global layer every third by default); a config saved when the pattern was
    also stored as `global_every` still loads, its every-N turned into layer_types."""
    from ettin.config import global_every, periodic_layer_types

    cfg = preset("150m")
    assert cfg.layer_types == periodic_layer_types(22, 3) and global_every(cfg.layer_types) == 3
    assert "global_every" not in cfg.to_dict()
    old = {k: v for k, v in preset("tiny").to_dict().items() if k != "layer_types"} | {"global_every": 2}
    assert ModelConfig.from_dict(old).layer_types == ["full_attention", "sliding_attention"] * 2
    kept = preset("tiny").to_dict() | {"global_every": 3}  # both stored: layer_types wins
    assert ModelConfig.from_dict(kept) == preset("tiny")
    assert global_every(["full_attention", "full_attention", "sliding_attention"]) is None


def test_the_runtime_is_held_not_configured():
    """How a model runs is one small object (ettin.runtime.Runtime) the caller hands in and may change: never part of
    the config; the model's attn_backend / loss_chunk_size read and write it."""
    from ettin.runtime import Runtime

    cfg = preset("tiny", vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2, mask_token_id=3)
    runtime = Runtime("sdpa", 256)
    m = EttinModel(cfg, runtime=runtime)
    assert m.runtime is runtime and (m.attn_backend, m.loss_chunk_size) == ("sdpa", 256)
    m.attn_backend = "cpu"
    assert runtime.attn_backend == "cpu" and "attn_backend" not in cfg.to_dict()
    assert EttinModel(cfg, attn_backend="flex").runtime == Runtime("flex")
    assert Runtime().backend(torch.device("cpu"), torch.float32) == "cpu"
    with pytest.raises(ValueError, match="unknown attention backend"):
        Runtime("fast").backend(torch.device("cpu"), torch.float32)
