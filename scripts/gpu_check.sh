#!/usr/bin/env bash
# One command that checks the GPU path of ettin on one CUDA device, in under 10 minutes on one H100/H200:
#   1. the attention backends agree on CUDA (sdpa, flex and, when installed, flash; bf16, and fp32 as evaluation
#      runs, where `auto` must not pick flash-attn);
#   2. a checkpoint trained on the CPU loads and evaluates on CUDA (logits as on the CPU);
#   3. the 17m and the 150m recipes' models train on real tokenized data (../shared/data/pretrain, the ModernBERT
#      tokenizer, unpacked 1024-token rows as published), with real tokens/s, MFU and the data-wait share beside the
#      published per-GPU rates (4 H100s trained 2T tokens of the 17M in 141 h and of the 150M in 470 h: about
#      0.99M and 0.30M tokens/s per GPU);
#   4. FSDP2 with the bf16 mixed-precision policy, in one process;
#   5. a cross-objective start (model.init_from a Hugging Face folder) under FSDP2, and the losses of 20 real-data
#      steps independent of the parallelism (one process, FSDP2, FSDP2 with 2 accumulation steps; fp32 and bf16).
# Figures go to $OUT/summary.json (and $OUT/gpu_check.log) for bench/README.md to quote.
#   scripts/gpu_check.sh                      # STEPS17=150 STEPS150=80 OUT=runs/gpu_check
set -euo pipefail
cd "$(dirname "$0")/.."

STEPS17=${STEPS17:-150}
STEPS150=${STEPS150:-80}
OUT=${OUT:-runs/gpu_check}
SHARED=${SHARED:-../shared/data}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg

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
rm -rf "$OUT"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
t0=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }
"$PY" -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"

stamp "1. attention backends agree on CUDA"
"$PY" - "$OUT" <<'PYEOF'
import json, sys
import torch
from ettin.attention import Varlen, attend, flash_available, layer_reach
torch.manual_seed(0)
dev = "cuda"
lengths = [1000, 37, 300, 700]  # 2037 tokens: not a multiple of any block size
cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device=dev)
report = {}
for dt, backends, tol in ((torch.bfloat16, ["sdpa", "flex"] + (["flash"] if flash_available() else []), 2e-2),
                          (torch.float32, ["sdpa", "flex", "auto"], 2e-4)):
    worst = 0.0
    for causal in (False, True):
        for local in (False, True):
            reach = layer_reach(causal, local, (63, 0) if causal else (64, 64))
            q, k, v = (torch.randn(2, 1024, 12, 64, device=dev, dtype=dt) for _ in range(3))
            qv, kv, vv = (torch.randn(sum(lengths), 12, 64, device=dev, dtype=dt) for _ in range(3))
            for name, args, kw in (("dense", (q, k, v), {}), ("packed", (qv, kv, vv), {"varlen": Varlen(cu, max(lengths))})):
                ref = attend(*args, causal=causal, reach=reach, backend="sdpa", **kw).float()
                for b in backends[1:]:
                    got = attend(*args, causal=causal, reach=reach, backend=b, **kw)
                    assert got.dtype == dt, (b, got.dtype)
                    diff = (got.float() - ref).abs().max().item()
                    worst = max(worst, diff)
                    print(f"attention {str(dt)[6:]} {b} vs sdpa: causal={causal} local={local} {name} max diff {diff:.2e}")
    report[str(dt)[6:]] = {"backends": backends, "worst_max_diff": worst, "tolerance": tol}
    print(f"attention {str(dt)[6:]} {backends}: worst max diff {worst:.2e} (tolerance {tol:g})")
    assert worst < tol, f"attention backends disagree in {dt}"
json.dump(report, open(f"{sys.argv[1]}/attention.json", "w"), indent=2)
PYEOF

stamp "2. a CPU-trained checkpoint evaluates on CUDA"
cat > "$OUT/cpu-tiny.yaml" <<'EOF'
name: cpu-tiny
seed: 1
model: {size: tiny}
data: {source: synthetic, vocab_size: 256}
train: {lr: 3e-3, global_batch_size: 8, micro_batch_size: 8, progress: false, tensorboard: false, cpu_threads: 4}
phases:
  - {name: pretrain, tokens: 20480, seq_len: 128, warmup_tokens: 2048}
EOF
for objective in mlm clm; do
    CUDA_VISIBLE_DEVICES="" "$PY" -m ettin.cli train "$OUT/cpu-tiny.yaml" --objective "$objective" \
        --out "$OUT/cpu-tiny-$objective" > "$OUT/cpu-tiny-$objective.log"
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
import torch
from ettin.train.checkpoint import latest_checkpoint, load_model
out = sys.argv[1]
report = {}
for objective in ("mlm", "clm"):
    ckpt = latest_checkpoint(f"{out}/cpu-tiny-{objective}")
    cpu = load_model(ckpt).eval()
    gpu = load_model(ckpt).cuda().eval()
    ids = torch.randint(4, 256, (4, 200))
    mask = torch.ones_like(ids)
    mask[1, 120:] = 0
    with torch.no_grad():
        a = cpu(ids, attention_mask=mask).logits
        b = gpu(ids.cuda(), attention_mask=mask.cuda()).logits.cpu()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            c = gpu(ids.cuda(), attention_mask=mask.cuda()).logits.float().cpu()
    real = mask.bool()
    fp32, bf16 = (a[real] - b[real]).abs().max().item(), (a[real] - c[real]).abs().max().item()
    print(f"{ckpt}: CUDA fp32 vs CPU max diff {fp32:.2e}; CUDA bf16 vs CPU {bf16:.2e}")
    assert fp32 < 1e-3 and bf16 < 0.25, objective
    report[objective] = {"checkpoint": str(ckpt), "fp32_max_diff": fp32, "bf16_max_diff": bf16}
json.dump(report, open(f"{out}/cpu_checkpoint.json", "w"), indent=2)
PYEOF

stamp "3. real data: the pretraining files, ModernBERT tokenizer"
"$PY" -m ettin.cli data prepare --out "$OUT/data" --workers 8 --tokenizer "$SHARED/modernbert_tokenizer" \
    --source "$SHARED/pretrain/wikipedia_vital_summaries_en.jsonl" --source "$SHARED/pretrain/sotu_addresses.jsonl" \
    --source "$SHARED/pretrain/gutenberg_books.jsonl" --source "$SHARED/pretrain/moby_dick_chapters.jsonl"
MIX="{pretrain: {name: gpu_check, instances: {mode: chunk}, sources: [{name: all, path: $OUT/data, weight: 1}]}}"

run() {  # run NAME RECIPE STEPS GLOBAL MICRO [extra overrides...]: a pre-training phase of about STEPS steps
    local name=$1 recipe=$2 steps=$3 global=$4 micro=$5
    shift 5
    local tokens=$((steps * global * 1024 * 45 / 100))  # real tokens: the data fills about half of each row
    "$@" -m ettin.cli train "$recipe" --out "$OUT/$name" \
        "data.tokenizer=$SHARED/modernbert_tokenizer" "data.mixtures=$MIX" data.holdout_fraction=0 \
        train.global_batch_size="$global" train.micro_batch_size="$micro" train.save_every_tokens=0 \
        train.tensorboard=false train.log_every=10 train.progress=false \
        "phases=[{name: pretrain, tokens: $tokens, seq_len: 1024, mixture: pretrain, warmup_tokens: $((tokens / 10))}]" \
        "${EXTRA[@]}" 2>&1 | tee "$OUT/$name.log"
}
EXTRA=(train.distributed=none)
stamp "3a. 17m, one GPU"
run 17m recipes/17m.yaml "$STEPS17" 288 144 "$PY"
stamp "3b. 150m, one GPU"
run 150m recipes/150m.yaml "$STEPS150" 144 72 "$PY"
stamp "4. 17m under FSDP2 (bf16 policy), one process"
EXTRA=(train.distributed=fsdp)
run 17m-fsdp recipes/17m.yaml "$((STEPS17 / 2))" 288 144 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1
grep -q "FSDP2 (sharded weights)" "$OUT/17m-fsdp.log" || { echo "gpu_check: step 4 did not run FSDP2" >&2; exit 1; }

stamp "5a. a cross-objective start (model.init_from an exported encoder) under FSDP2, one process"
"$PY" -m ettin.cli export-hf "$OUT/cpu-tiny-mlm" "$OUT/cpu-tiny-mlm-hf" > "$OUT/export.log"
"$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m ettin.cli train "$OUT/cpu-tiny.yaml" \
    --objective clm --out "$OUT/from-encoder-fsdp" "model.init_from=$OUT/cpu-tiny-mlm-hf" train.distributed=fsdp \
    train.cpu_threads=0 2>&1 | tee "$OUT/from-encoder-fsdp.log"
grep -q "FSDP2 (sharded weights)" "$OUT/from-encoder-fsdp.log" || { echo "gpu_check: 5a did not run FSDP2" >&2; exit 1; }

stamp "5b. losses independent of the parallelism: 17m, 20 steps of real data, fp32 and bf16, dropout on"
for precision in fp32 bf16; do
    EXTRA=(train.distributed=none train.compile=false train.precision=$precision train.log_every=1)
    run "par-$precision-none" recipes/17m.yaml 20 64 64 "$PY"
    EXTRA=(train.distributed=fsdp train.compile=false train.precision=$precision train.log_every=1)
    run "par-$precision-fsdp" recipes/17m.yaml 20 64 64 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1
    run "par-$precision-fsdp-accum2" recipes/17m.yaml 20 64 32 "$PY" -m torch.distributed.run --standalone \
        --nproc_per_node 1
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
out = sys.argv[1]
report = {}
for precision, tolerance in (("fp32", 1e-3), ("bf16", 2e-2)):  # CUDA kernels reduce in their own order
    ref = [json.loads(x)["loss"] for x in open(f"{out}/par-{precision}-none/metrics.jsonl")]
    for mode in ("fsdp", "fsdp-accum2"):
        got = [json.loads(x)["loss"] for x in open(f"{out}/par-{precision}-{mode}/metrics.jsonl")]
        assert len(got) == len(ref), (precision, mode, len(got), len(ref))
        worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
        report[f"{precision}-{mode}"] = {"steps": len(ref), "max_relative_difference": worst, "tolerance": tolerance}
        print(f"parallelism {precision} {mode} vs one process: {len(ref)} steps, max relative loss difference "
              f"{worst:.2e} (tolerance {tolerance:g})")
        assert worst < tolerance, (precision, mode, worst)
json.dump(report, open(f"{out}/parallelism.json", "w"), indent=2)
PYEOF

stamp "summary"
"$PY" - "$OUT" <<'PYEOF'
import json, sys
import torch
out = sys.argv[1]
published = {"17m": 0.99e6, "150m": 0.30e6, "17m-fsdp": 0.99e6}  # per H100, from the published training cost
summary = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": {}}
for name, rate in published.items():
    rows = [json.loads(line) for line in open(f"{out}/{name}/metrics.jsonl")]
    steady = rows[len(rows) // 2:]  # after compilation and warm-up
    mean = lambda key: sum(r[key] for r in steady) / len(steady)
    tps, mfu, wait = mean("tokens_per_s"), mean("mfu"), mean("data_wait_share")
    summary["runs"][name] = {"steps": rows[-1]["step"], "loss_first": rows[0]["loss"], "loss_last": rows[-1]["loss"],
                             "real_tokens_per_s": tps, "mfu": mfu, "data_wait_share": wait,
                             "published_tokens_per_s_per_h100": rate}
    print(f"gpu_check {name}: {rows[-1]['step']} steps, loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}; steady "
          f"state {tps:,.0f} real tokens/s ({tps / rate:.2f}x the published {rate / 1e6:.2f}M per H100), MFU "
          f"{100 * mfu:.1f}%, waiting for data {100 * wait:.1f}% of the time")
for name in ("attention", "cpu_checkpoint", "parallelism"):
    summary[name] = json.load(open(f"{out}/{name}.json"))
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
print(f"wrote {out}/summary.json")
PYEOF
stamp "done"
