"""The parts of bench/sweep_demo.py that are not its stages: the sweep's constants (shapes, environment, the probe
recipe), the foreign-load meter that makes measurements wait for a quiet machine, a shape's model config and FLOPs per
token, reading a run's last checkpoint and its `lm` result, and the markdown report of sweep.json. Imported by the
script (run as `python bench/sweep_demo.py`, which puts bench/ on the path).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("runs/sweep")  # relative to ROOT (the commands run there)
DEMO = "recipes/demo.yaml"
SHAPES = (
    "4x64",
    "4x128",
    "6x128",
    "4x192",
    "6x192",
    "8x256",
)  # layers x hidden; intermediate 1.5 x hidden, heads hidden/64
ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HOME": str(ROOT / ".cache" / "hf"),
    "MPLBACKEND": "Agg",
}
OBJECTIVES = {"mlm": "encoder", "clm": "decoder"}
PHASE_SHARES = (
    0.85,
    0.075,
    0.075,
)  # demo.yaml's structure: pretrain at seq 256, extension + decay at seq 512
PROBE_RECIPE = """\
# Written by bench/sweep_demo.py: demo.yaml's first phase alone, for throughput probes.
extends: ../../../recipes/demo.yaml
name: probe
train: {save_every_tokens: 0, log_every: 1, tensorboard: false}
phases:
  - name: pretrain
    tokens: 80k
    seq_len: 256
    global_rope_theta: 10000
    local_rope_theta: 10000
    mlm_probability: 0.3
    mixture: pretrain
    schedule: warmup_stable
    warmup_tokens: 16k
"""



# ------------------------------------------------------------------------------------------------ helpers
def _proc_times() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, user + system CPU seconds so far) for every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


class ForeignLoad:
    """CPU used by processes outside this script's process tree (other people's tests and demos share the
    2 cores): sampled so that measurements wait for a quiet machine and record how quiet it stayed."""

    def __init__(self) -> None:
        self._last = self._foreign(_proc_times())
        self._t = time.perf_counter()

    @staticmethod
    def _foreign(times: dict[int, tuple[int, float]]) -> dict[int, float]:
        mine, frontier = {os.getpid()}, [os.getpid()]
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in times.items():
            children.setdefault(ppid, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), []):
                if child not in mine:
                    mine.add(child)
                    frontier.append(child)
        return {pid: cpu for pid, (_, cpu) in times.items() if pid not in mine}

    def sample(self) -> tuple[float, float]:
        """(foreign CPU seconds, wall seconds) since the last sample."""
        now, t = self._foreign(_proc_times()), time.perf_counter()
        used = sum(
            max(0.0, cpu - self._last.get(pid, 0.0)) for pid, cpu in now.items()
        )  # new pids: all their CPU
        wall, self._last, self._t = t - self._t, now, t
        return used, wall

    def wait_quiet(
        self, log, cores: float = 0.15, seconds: float = 20.0, patience_s: float = 3600.0
    ) -> float:
        """Wait until the foreign load stays under `cores` for `seconds`; returns the seconds waited."""
        t0, quiet_since = time.perf_counter(), None
        self.sample()
        announced = False
        while time.perf_counter() - t0 < patience_s:
            time.sleep(2.0)
            used, wall = self.sample()
            if used / max(wall, 1e-9) < cores:
                quiet_since = quiet_since or time.perf_counter()
                if time.perf_counter() - quiet_since >= seconds:
                    return time.perf_counter() - t0
            else:
                quiet_since = None
                if not announced:
                    log(f"other processes use {used / wall:.2f} cores: waiting for a quiet machine")
                    announced = True
        log(f"the machine stayed busy for {patience_s:.0f} s: measuring anyway (recorded as foreign load)")
        return time.perf_counter() - t0


def parse_shape(text: str) -> tuple[int, int]:
    layers, hidden = text.lower().split("x")
    return int(layers), int(hidden)


def shape_overrides(shape: str) -> list[str]:
    layers, hidden = parse_shape(shape)
    return [
        f"model.overrides.num_layers={layers}",
        f"model.overrides.hidden_size={hidden}",
        f"model.overrides.intermediate_size={hidden * 3 // 2}",
        f"model.overrides.num_heads={max(1, hidden // 64)}",
    ]


def model_config(shape: str, objective: str):
    """The shape's ModelConfig with the 4k tokenizer's vocabulary and special ids (parameter, FLOP counts)."""
    from ettin.config import preset

    manifest = json.loads((ROOT / "runs/data/pretrain-4k/manifest.json").read_text())["tokenizer"]
    layers, hidden = parse_shape(shape)
    return preset(
        "demo",
        objective,
        num_layers=layers,
        hidden_size=hidden,
        intermediate_size=hidden * 3 // 2,
        num_heads=max(1, hidden // 64),
        vocab_size=manifest["vocab_size"],
        pad_token_id=manifest["pad_id"],
        bos_token_id=manifest["cls_id"],
        eos_token_id=manifest["sep_id"],
        mask_token_id=manifest["mask_id"],
    )


def flops_per_token(shape: str, objective: str, seq_len: int, mlm_probability: float) -> float:
    from ettin.train.progress import step_flops

    cfg = model_config(shape, objective).replace(max_position_embeddings=max(512, seq_len))
    predicted = 1.0 if objective == "clm" else mlm_probability
    return step_flops(cfg, 10_000, int(10_000 * predicted), seq_len) / 10_000


def last_checkpoint(run_dir: Path) -> Path | None:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return None
    ckpts = [p for p in folder.iterdir() if p.name.startswith("decay-step") and (p / "meta.json").is_file()]
    return max(ckpts, key=lambda p: int(re.sub(r"\D", "", p.name.split("step")[-1]) or 0), default=None)


def read_lm(out: Path, checkpoint: Path) -> dict:
    """The lm task's held-out loss (nats per scored token), with a standard error over windows."""
    run_dir = checkpoint.parent.parent  # ettin.eval names a pair's runs <pair>-<encoder|decoder>
    run = f"{run_dir.parent.name}-{run_dir.name}" if run_dir.name in OBJECTIVES.values() else run_dir.name
    found = [p for p in out.rglob(f"{checkpoint.name}.json") if p.parent.name == run]
    if not found:
        raise FileNotFoundError(f"no eval result for {checkpoint} under {out}")
    data = json.loads(found[0].read_text())
    lm = data["tasks"]["lm"]
    if "loglik" in lm:
        loss = -lm["loglik"]
    else:
        loss = math.log(lm.get("masked_perplexity") or lm["perplexity"])
    scores = (lm.get("per_example") or {}).get("score") or []
    se = statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else math.nan
    res = {
        "loss": loss,
        "loss_se": se,
        "n": lm.get("n"),
        "tokens_scored": lm.get("tokens_scored"),
        "checkpoint": str(checkpoint),
        "result_file": str(found[0]),
        "tokens_trained": data["model"].get("tokens"),
    }
    for key in ("masked_accuracy", "masked_perplexity", "perplexity", "baseline", "baseline_name"):
        if key in lm:
            res[key] = lm[key]
    return res


def report(d: dict) -> str:
    peak = d.get("peak", {})
    lines = []
    if peak:
        lines.append(
            "Peak (one thread, best of matmul/linear 256-1024): "
            f"fp32 {peak['fp32']['best'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16']['best'] / 1e9:.2f} GFLOP/s; "
            "matmul 1024x1024: fp32 "
            f"{peak['fp32']['matmul_1024'] / 1e9:.1f}, bf16 {peak['bf16']['matmul_1024'] / 1e9:.2f} GFLOP/s "
            f"({peak.get('cpu_capability')}, torch {peak.get('torch')})."
        )
    u = d.get("unigram")
    if u:
        lines.append(
            f"Unigram baseline on {u['held_out_tokens']:,} held-out tokens: "
            f"entropy {u['entropy_held_out']:.3f}; cross-entropy under the training side's frequencies "
            f"{u['xent_held_out_under_train_unigram']:.3f} "
            f"(pretrain mixture's {u['xent_held_out_under_pretrain_mix_unigram']:.3f}); entropy of the "
            f"pretrain mixture {u['entropy_pretrain_mix']:.3f} nats."
        )
    lines += [
        "",
        "| shape (L x H) | params (non-emb) | fp32 tok/s MLM / CLM (util) | bf16 tok/s MLM / CLM (util) "
        "| tokens trained (nominal P1 + P2 + P3) | wall MLM / CLM (s) | held-out loss MLM (masked acc) "
        "| held-out loss CLM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for shape, t in sorted(d.get("throughput", {}).items(), key=lambda kv: kv[1]["params"]):

        def rates(p, t=t):
            if p not in t:
                return "-"
            m, c = t[p]["mlm"], t[p]["clm"]
            return (
                f"{m['tokens_per_s']:,.0f} / {c['tokens_per_s']:,.0f} "
                f"({100 * m['utilisation']:.0f}% / {100 * c['utilisation']:.0f}%)"
            )

        plan = d.get("plans", {}).get(shape)
        run = d.get("runs", {}).get(shape)
        ev = d.get("eval", {})
        enc, dec = ev.get(f"{shape}/mlm"), ev.get(f"{shape}/clm")
        toks = "-" if not plan else "{:,} + {:,} + {:,}".format(*plan["tokens"])
        if run:
            toks = f"{run['clm']['tokens'] / 1e6:.2f}M ({toks})"
        walls = "-" if not run else f"{run['mlm']['train_wall_s']:.0f} / {run['clm']['train_wall_s']:.0f}"
        enc_t = (
            "-" if not enc else f"{enc['loss']:.3f} +- {enc['loss_se']:.3f} ({enc['masked_accuracy']:.3f})"
        )
        dec_t = "-" if not dec else f"{dec['loss']:.3f} +- {dec['loss_se']:.3f}"
        lines.append(
            f"| {shape} | {t['params'] / 1e6:.2f}M ({t['non_embedding_params'] / 1e6:.2f}M) "
            f"| {rates('fp32')} | {rates('bf16')} | {toks} | {walls} | {enc_t} | {dec_t} |"
        )
    if d.get("runs"):
        lines += [
            "",
            "| shape | MLM train loss at end of pretrain / ext / decay | MLM train loss: reached the "
            "unigram level / 0.25 below it (tokens) | CLM train loss at end of pretrain / ext / decay |",
            "|---|---|---|---|",
        ]
        for shape, run in sorted(d["runs"].items(), key=lambda kv: d["throughput"][kv[0]]["params"]):

            def ends(o, run=run):
                return " / ".join(f"{v:.3f}" for v in run[o]["phase_end_loss_avg"].values())

            m = run["mlm"]
            lines.append(
                f"| {shape} | {ends('mlm')} | {m['plateau_reached_tokens']} / {m['plateau_left_tokens']} "
                f"| {ends('clm')} |"
            )
    if d.get("heldout_curve"):
        by_shape: dict = {}
        for label, v in d["heldout_curve"].items():
            by_shape.setdefault(label.split("/")[0], []).append(v)
        lines += ["", "Encoder held-out masked loss at the kept checkpoints (tokens: loss):", ""]
        for shape, vals in by_shape.items():
            vals.sort(key=lambda v: v["tokens_trained"] or 0)
            lines.append(
                f"- {shape}: " + ", ".join(f"{v['tokens_trained'] / 1e6:.2f}M: {v['loss']:.2f}" for v in vals)
            )
    if d.get("lr", {}).get("runs"):
        lr = d["lr"]
        lines += [
            "",
            f"Peak learning rate at {lr['shape']} (same tokens; 3e-3 is the sweep's run):",
            "",
            "| objective | peak lr | held-out loss | masked acc |",
            "|---|---|---|---|",
        ]
        for obj in OBJECTIVES:
            base = d.get("eval", {}).get(f"{lr['shape']}/{obj}")
            rows = [(3e-3, base)] if base else []
            rows += [
                (float(k.split("/")[-1]), v["eval"])
                for k, v in lr["runs"].items()
                if (k.split("/")[0] if "/" in k else "mlm") == obj
            ]
            if len(rows) < 2:
                continue
            for value, ev in sorted(rows, key=lambda r: r[0]):
                acc = f"{ev['masked_accuracy']:.3f}" if "masked_accuracy" in ev else "-"
                lines.append(f"| {obj} | {value:g} | {ev['loss']:.3f} +- {ev['loss_se']:.3f} | {acc} |")
    return "\n".join(lines) + "\n"



def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()

