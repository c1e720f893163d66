#!/usr/bin/env bash
# One-script GPU check of the training stack: the 150m recipe's model for a few hundred steps in bf16 on
# CUDA (FlexAttention by default, or flash-attn / SDPA), on synthetic token ids (no data to download),
# printing tokens/s and MFU. Expected to finish in under 6 minutes on one H100.
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
