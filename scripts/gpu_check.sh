#!/usr/bin/env bash
# One-script GPU check of the training stack: the 150m recipe's model for a few hundred steps in bf16 on
# CUDA (FlexAttention by default, or flash-attn / SDPA), on synthetic token ids (no data to download),
# printing tokens/s and MFU, after checking that the attention backends agree on the GPU.
# Expected to finish in under 6 minutes on one H100.
#   scripts/gpu_check.sh                       # STEPS=300 BACKEND=flex COMPILE=true BATCH=64 MICRO=32
#   BACKEND=sdpa COMPILE=false scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS=${STEPS:-300}
BACKEND=${BACKEND:-flex}
COMPILE=${COMPILE:-true}
BATCH=${BATCH:-64}          # sequences of 1024 tokens per step
MICRO=${MICRO:-32}
OUT=${OUT:-runs/gpu_check}

# A Python whose torch sees the GPU: $PY, else python3 on PATH, else the project venv.
for candidate in "${PY:-}" python3 .venv/bin/python; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        PY=$candidate
        break
    fi
    PY=""
done
if [ -z "${PY:-}" ]; then
    echo "gpu_check: no Python with a CUDA torch found (set PY=...)" >&2
    exit 1
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"

# Attention backends agree on CUDA (bf16): SDPA, FlexAttention and, when installed, flash-attn varlen;
# dense and packed layouts, global and local layers, both objectives. Fails the check on disagreement.
"$PY" - <<'PYEOF'
import torch
from ettin.attention import Varlen, attend, flash_available, layer_reach
torch.manual_seed(0)
dev, dt = "cuda", torch.bfloat16
backends = ["sdpa", "flex"] + (["flash"] if flash_available() else [])
lengths = [1000, 37, 300, 711]
cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device=dev)
worst = 0.0
for causal in (False, True):
    for local in (False, True):
        reach = layer_reach(causal, local, (63, 0) if causal else (64, 64))
        q, k, v = (torch.randn(2, 1024, 12, 64, device=dev, dtype=dt) for _ in range(3))
        qv, kv, vv = (torch.randn(sum(lengths), 12, 64, device=dev, dtype=dt) for _ in range(3))
        for args, kw in (((q, k, v), {}), ((qv, kv, vv), {"varlen": Varlen(cu, max(lengths))})):
            ref = attend(*args, causal=causal, reach=reach, backend="sdpa", **kw).float()
            for b in backends[1:]:
                diff = (attend(*args, causal=causal, reach=reach, backend=b, **kw).float() - ref).abs().max().item()
                worst = max(worst, diff)
                print(f"attention {b} vs sdpa: causal={causal} local={local} varlen={bool(kw)} max diff {diff:.2e}")
print(f"attention backends {backends}: worst max diff {worst:.2e}")
assert worst < 2e-2, "attention backends disagree"
PYEOF

TOKENS=$((STEPS * BATCH * 1024))
rm -rf "$OUT"
"$PY" -m ettin.cli train recipes/150m.yaml --out "$OUT" \
    data.source=synthetic data.vocab_size=50368 \
    "model.overrides={attn_backend: $BACKEND}" \
    train.global_batch_size="$BATCH" train.micro_batch_size="$MICRO" train.compile="$COMPILE" \
    train.distributed=none train.save_every_tokens=0 train.tensorboard=false train.log_every=10 \
    "phases=[{name: pretrain, tokens: $TOKENS, seq_len: 1024, warmup_tokens: $((TOKENS / 10))}]"

"$PY" - "$OUT" <<'PYEOF'
import json, sys
rows = [json.loads(line) for line in open(f"{sys.argv[1]}/metrics.jsonl")]
steady = rows[len(rows) // 2 :]  # after compilation and warm-up
tps = sum(r["tokens_per_s"] for r in steady) / len(steady)
mfu = sum(r["mfu"] for r in steady) / len(steady)
print(f"gpu_check: {rows[-1]['step']} steps, loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}; "
      f"steady state {tps:,.0f} tokens/s, MFU {100 * mfu:.1f}% (model FLOPs incl. head / 989 TFLOP/s bf16)")
PYEOF
