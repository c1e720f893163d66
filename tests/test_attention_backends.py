"""Every attention backend that should run on this machine agrees with the others, in every layout: a matrix of
backend x dtype x layout. A backend that should run here and does not is a failure, never a skip. On a CPU: the
`cpu` kernels, SDPA and compiled FlexAttention (flash-attn is CUDA-only: `scripts/gpu_check.sh` runs the CUDA
cells). Tolerances: fp32 2e-5 absolute; bf16 3e-2 (the inputs' rounding, about 2^-8 relative, through softmax)."""

import subprocess
import sys

import pytest
import torch

from ettin.attention import FlexMasks, Varlen, attend, layer_reach

BACKENDS = ["cpu", "sdpa", "flex"]
TOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2}
LENGTHS = [40, 7, 65, 24]  # packed documents: one longer than the window, one shorter than a block


def _inputs(layout: str, dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    if layout == "packed":
        n = sum(LENGTHS)
        q, k, v = (torch.randn(n, 4, 16, generator=g).to(dtype) for _ in range(3))
        cu = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
        return (q, k, v), {"varlen": Varlen(cu_seqlens=cu, max_seqlen=max(LENGTHS))}
    q, k, v = (torch.randn(2, 96, 4, 16, generator=g).to(dtype) for _ in range(3))
    return (q, k, v), {}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["dense", "packed"])
@pytest.mark.parametrize("local", [False, True], ids=["global", "windowed"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_backends_agree(dtype, layout, local, causal):
    reach = layer_reach(causal, local, (7, 0) if causal else (8, 8))
    args, kw = _inputs(layout, dtype)
    outs = {b: attend(*args, causal=causal, reach=reach, backend=b, **kw) for b in BACKENDS}
    ref = outs["sdpa"].float()
    for b, out in outs.items():
        assert out.dtype == dtype and out.shape == args[0].shape, b
        torch.testing.assert_close(out.float(), ref, atol=TOL[dtype], rtol=0, msg=f"{b} vs sdpa")


def test_padded_batches_agree_through_the_model():
    """Padded rows (the model unpads them into the varlen layout) give the same logits on every backend."""
    from ettin.config import preset
    from ettin.model import EttinModel

    for objective in ("mlm", "clm"):
        m = EttinModel(preset("tiny", objective, vocab_size=128, local_attention=16, pad_token_id=0,
                              bos_token_id=1, eos_token_id=2, mask_token_id=3)).eval()
        ids = torch.randint(4, 128, (3, 50))
        mask = torch.ones_like(ids)
        mask[1, 20:] = 0
        mask[2, 45:] = 0
        real = mask.bool()
        logits = {}
        for b in BACKENDS:
            m.attn_backend = b
            with torch.no_grad():
                logits[b] = m(ids, attention_mask=mask).logits[real]
        for b in BACKENDS:
            torch.testing.assert_close(logits[b], logits["sdpa"], atol=1e-4, rtol=0, msg=f"{objective} {b}")


def test_one_block_mask_per_reach_and_forward(monkeypatch):
    """The flex backend builds its BlockMask once per forward for each reach (global, local), not in every layer."""
    import torch.nn.attention.flex_attention as flex

    from ettin.config import preset
    from ettin.model import EttinModel

    built = []
    real = flex.create_block_mask
    # count the outer calls (with _compile=True the call compiles create_block_mask itself, which calls it again)
    monkeypatch.setattr(flex, "create_block_mask",
                        lambda *a, **k: (k.get("_compile") and built.append(1)) or real(*a, **k))
    m = EttinModel(preset("tiny", "mlm", vocab_size=128, num_layers=6, local_attention=16, pad_token_id=0,
                          bos_token_id=1, eos_token_id=2, mask_token_id=3), attn_backend="flex").eval()
    with torch.no_grad():
        m(torch.randint(4, 128, (2, 40)))
    assert len(built) == 2  # 6 layers, two reaches
    masks = FlexMasks()
    assert masks.get((3, 3), 1, 64, None, torch.device("cpu")) is masks.get((3, 3), 1, 64, None, torch.device("cpu"))


def test_flex_refuses_dropout_instead_of_ignoring_it():
    q = k = v = torch.randn(1, 32, 2, 8)
    with pytest.raises(ValueError, match="no dropout"):
        attend(q, k, v, causal=False, reach=layer_reach(False, False, (8, 8)), backend="flex", dropout=0.1)


_PEAK = """
import os, sys, threading, time, torch
from ettin.attention import attend, layer_reach
T, h, D = 8192, 8, 16
reach = layer_reach(False, True, (64, 64))
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
def call():
    q, k, v = (torch.randn(1, T, h, D) for _ in range(3))
    return attend(q, k, v, causal=False, reach=reach, backend=sys.argv[1])
call()  # compiles for this shape; the second call is what a training step pays
base, peak, done = rss(), [0], [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)
t = threading.Thread(target=sample)
t.start()
out = call()
done[0] = True
t.join()
print(base, max(peak[0], rss()))
"""


def test_compiled_flex_memory_stays_far_below_the_score_matrix():
    """A windowed layer at 8192 tokens, 8 heads: the full score matrix would be 8192^2 x 8 x 4 bytes = 2 GiB. The
    resident memory a compiled flex call adds while it runs (sampled in a fresh process, after the call that
    compiled it) stays under a tenth of that; its inputs and output are 16 MiB."""
    scores = 8192 * 8192 * 8 * 4
    proc = subprocess.run([sys.executable, "-c", _PEAK, "flex"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    base, peak = map(int, proc.stdout.split()[-2:])
    added = peak - base
    assert added < scores / 10, f"flex added {added / 2**20:.0f} MiB against a {scores / 2**30:.0f} GiB score matrix"
