"""Compute-optimal sweep for the CPU demo (`make demo`): which model shape gives the lowest held-out loss when
each native model gets a fixed wall-clock budget (default 300 s) of one core, for MLM and CLM, and whether
bf16 autocast beats fp32 on this CPU at these shapes.

    .venv/bin/python bench/sweep_demo.py                         # everything (~1 h on an idle 2-core box)
    .venv/bin/python bench/sweep_demo.py --stages peak,tput      # only the matmul peak and the probes
    .venv/bin/python bench/sweep_demo.py --stages train,eval --shapes 6x128 --force
    .venv/bin/python bench/sweep_demo.py --stages report         # the table again, from sweep.json

Stages (each one's results go into runs/sweep/sweep.json; finished runs are reused unless --force):
  peak     one-thread matmul rate, fp32 and bf16 (torch.matmul and F.linear, 256-1024 squares); the best is
           the peak that utilisation is quoted against.
  unigram  the unigram baseline: entropy of the held-out evaluation tokens, and their cross-entropy under the
           training side's token frequencies (the loss of a model that learned only frequencies).
  tput     per shape and precision, a short phase-0-only `ettin pair --parallel` (one core per objective):
           tokens/s and utilisation from metrics.jsonl (log_every 1), and the process overhead.
  train    per shape, `ettin pair recipes/demo.yaml --parallel` with the three demo phases (85% / 7.5% / 7.5%
           of the tokens, seq 256 / 512 / 512), the token count set so that the slower objective (the decoder)
           takes the budget at the faster precision: both models of a pair see the same tokens, as in the
           demo.
  eval     `ettin eval <last checkpoint> --tasks lm --threads 1`, encoder and decoder side by side.
  lr       the best encoder shape again with other peak learning rates (encoder only, two at a time).
  report   the markdown table (also runs/sweep/table.md).

This file holds the stages; the constants, the foreign-load meter, the readers and the report table are in
bench/sweep_parts.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sweep_parts import (
    DEMO,
    ENV,
    OBJECTIVES,
    OUT,
    PHASE_SHARES,
    PROBE_RECIPE,
    ROOT,
    SHAPES,
    ForeignLoad,
    _cpu_name,
    flops_per_token,
    last_checkpoint,
    model_config,
    read_lm,
    report,
    shape_overrides,
)


class Sweep:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.path = OUT / "sweep.json"
        self.data: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data.setdefault("commands", {})
        self.data.setdefault("stage_seconds", {})
        (OUT / "logs").mkdir(parents=True, exist_ok=True)
        self.load = ForeignLoad()
        self.last_load: dict = {}
        self.last_start = time.time()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        os.replace(tmp, self.path)

    def log(self, text: str) -> None:
        print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {text}", flush=True)

    def run_many(
        self, key: str, cmds: list[list[str]], logs: list[Path], patience_s: float | None = None
    ) -> list[float]:
        """Run the commands side by side (one per core) once the machine is quiet (at most `patience_s` of
        waiting); returns each one's wall seconds. Raises on failure."""
        self.data["commands"][key] = [" ".join(c) for c in cmds]
        patience = self.args.patience_s if patience_s is None else patience_s
        waited = self.load.wait_quiet(self.log, patience_s=patience) if patience > 0 else 0.0
        self.load.sample()
        foreign = 0.0
        self.last_start = time.time()
        env = {**os.environ, **ENV}
        procs = []
        for cmd, log in zip(cmds, logs):
            log.parent.mkdir(parents=True, exist_ok=True)
            self.log(f"$ {' '.join(cmd)}")
            fh = open(log, "w")
            procs.append(
                (
                    subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT),
                    fh,
                    time.perf_counter(),
                )
            )
        walls = [0.0] * len(procs)
        pending = set(range(len(procs)))
        while pending:
            for i in list(pending):
                proc, fh, t0 = procs[i]
                if proc.poll() is not None:
                    walls[i] = time.perf_counter() - t0
                    fh.close()
                    pending.discard(i)
            time.sleep(0.5)
            foreign += self.load.sample()[0]
        self.last_load = {
            "waited_for_quiet_s": waited,
            "foreign_cpu_s": foreign,
            "foreign_cores_mean": foreign / max(max(walls), 1e-9),
        }
        if self.last_load["foreign_cores_mean"] > 0.05:
            self.log(f"{key}: other processes used {foreign:.0f} CPU s during the measurement")
        bad = [logs[i] for i, (proc, _, _) in enumerate(procs) if proc.returncode != 0]
        if bad:
            raise RuntimeError(f"{key}: failed, see {', '.join(map(str, bad))}")
        return walls

    def ettin(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ettin.cli", *args]

    def shapes(self) -> list[str]:
        return [s.strip() for s in self.args.shapes.split(",") if s.strip()]

    # ------------------------------------------------------------------------------------------ stages
    def stage_peak(self) -> None:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(1)

        def rate(fn, flops: float, seconds: float = 1.0) -> float:
            fn()
            fn()
            t0, k = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds or k < 2:
                fn()
                k += 1
            return flops * k / (time.perf_counter() - t0)

        out = {}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            by = {}
            for n in (256, 512, 1024):
                a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
                by[f"matmul_{n}"] = rate(lambda a=a, b=b: a @ b, 2 * n**3)
                by[f"linear_{n}"] = rate(lambda a=a, b=b: F.linear(a, b), 2 * n**3)
            out[name] = {"best": max(by.values()), "matmul_1024": by["matmul_1024"], "by_op": by}
            self.log(
                f"peak {name}: best {out[name]['best'] / 1e9:.1f} GFLOP/s, "
                f"matmul 1024 {by['matmul_1024'] / 1e9:.2f} GFLOP/s (one thread)"
            )
        out["threads"] = 1
        out["torch"] = torch.__version__
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
        self.data.setdefault("peak_history", []).append(out)
        if "peak" not in self.data or self.args.force:  # the first measurement is the one utilisation uses
            self.data["peak"] = out

    def stage_unigram(self) -> None:
        """Unigram baselines, in nats per token."""
        import numpy as np
        import yaml
        from tokenizers import Tokenizer

        from ettin.data.holdout import HOLDOUT_FRACTION, held_out_count

        folder = ROOT / "runs/data/pretrain-4k"
        manifest = json.loads((folder / "manifest.json").read_text())
        vocab = manifest["tokenizer"]["vocab_size"]
        per_source, held = {}, {}
        for shard in manifest["shards"]:
            tokens = np.load(folder / shard["tokens_file"], mmap_mode="r")
            offsets = np.load(folder / shard["offsets_file"])
            docs = len(offsets) - 1
            cut = offsets[docs - held_out_count(docs, HOLDOUT_FRACTION)]
            per_source[shard["source"]] = np.bincount(np.asarray(tokens[:cut]), minlength=vocab).astype(
                np.float64
            )
            held[shard["source"]] = np.bincount(np.asarray(tokens[cut:]), minlength=vocab).astype(np.float64)
        mix = yaml.safe_load((ROOT / "recipes/data/demo_pretrain.yaml").read_text())["sources"]
        weights = {s["subset"]: s["percent"] / 100 for s in mix}
        p_mix = sum(w * per_source[k] / per_source[k].sum() for k, w in weights.items())
        all_train = sum(per_source.values())

        def entropy(counts):
            p = counts / counts.sum()
            return float(-(p[p > 0] * np.log(p[p > 0])).sum())

        def cross(counts, q):
            q = q + 0.5  # (pseudo-)counts with add-1/2 smoothing: no held-out token gets probability 0
            q = q / q.sum()
            return float(-(counts * np.log(q)).sum() / counts.sum())

        # The held-out tokens that `ettin eval --tasks lm` scores: its windows, rebuilt with the tokenizer.
        eval_counts, eval_source = None, "held-out shard tails (ettin.eval windows unavailable)"
        try:
            from types import SimpleNamespace

            from ettin.eval.tasks.data import default_data_dir
            from ettin.eval.tasks.language_modeling import held_out_windows

            tok = Tokenizer.from_file(str(ROOT / manifest["tokenizer"]["path"]))
            shim = SimpleNamespace(
                max_length=256, encode=lambda t: tok.encode(t, add_special_tokens=False).ids
            )
            windows = held_out_windows(shim, ROOT / default_data_dir(), 128)
            ids = np.concatenate([np.asarray(w, dtype=np.int64) for _, w in windows])
            eval_counts = np.bincount(ids, minlength=vocab).astype(np.float64)
            eval_source = f"the {len(windows)} windows of `ettin eval --tasks lm` (limit 128, max_length 256)"
        except Exception as e:  # the eval package is edited by others; fall back to the shards' tails
            self.log(f"unigram: eval windows unavailable ({e}); using the held-out shard tails")
        if eval_counts is None:
            eval_counts = sum(held.values())
        self.data["unigram"] = {
            "held_out_tokens": int(eval_counts.sum()),
            "held_out_source": eval_source,
            "entropy_held_out": entropy(eval_counts),
            "xent_held_out_under_train_unigram": cross(eval_counts, all_train),
            "xent_held_out_under_pretrain_mix_unigram": cross(eval_counts, p_mix * 1e9),
            "entropy_pretrain_mix": float(-(p_mix[p_mix > 0] * np.log(p_mix[p_mix > 0])).sum()),
            "entropy_train_all": entropy(all_train),
            "pretrain_mix_weights": weights,
            "vocab_size": vocab,
        }
        self.log(
            "unigram: "
            + ", ".join(f"{k} {v:.3f}" for k, v in self.data["unigram"].items() if isinstance(v, float))
        )

    def _probe_rates(self, run_dir: Path, skip_steps: int) -> dict:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        # log_every 1: one step per row
        step_tokens = [rows[0]["tokens"]] + [b["tokens"] - a["tokens"] for a, b in zip(rows, rows[1:])]
        use = list(range(min(skip_steps, len(rows) - 1), len(rows)))
        seconds = [step_tokens[i] / rows[i]["tokens_per_s"] for i in use]
        util = sum(rows[i]["mfu"] * s for i, s in zip(use, seconds)) / sum(seconds)
        return {
            "tokens_per_s": sum(step_tokens[i] for i in use) / sum(seconds),
            "utilisation": util,
            "steps_timed": len(use),
            "steps": len(rows),
            "first_step_s": step_tokens[0] / rows[0]["tokens_per_s"],
            "median_step_s": statistics.median(seconds),
            "train_s": sum(step_tokens[i] / rows[i]["tokens_per_s"] for i in range(len(rows))),
            "loss_last": rows[-1]["loss"],
        }

    def stage_tput(self) -> None:
        recipe = OUT / "recipes" / "probe.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(PROBE_RECIPE)
        peak = self.data["peak"]
        tput = self.data.setdefault("throughput", {})
        for shape in self.shapes():
            entry = tput.setdefault(shape, {})
            cfg = model_config(shape, "mlm")
            entry["params"] = cfg.num_parameters()
            entry["non_embedding_params"] = cfg.num_parameters() - cfg.vocab_size * cfg.hidden_size
            for precision in self.args.precisions.split(","):
                if precision in entry and not self.args.force:
                    continue
                steps = self.args.fp32_probe_steps if precision == "fp32" else self.args.bf16_probe_steps
                out = OUT / "tput" / f"{shape}-{precision}"
                cmd = self.ettin(
                    "pair",
                    str(recipe),
                    "--parallel",
                    "--out",
                    str(out),
                    *shape_overrides(shape),
                    f"train.precision={precision}",
                    f"train.peak_flops={peak[precision]['best']:.6g}",
                    f"phases.0.tokens={steps * 4096}",
                    f"phases.0.warmup_tokens={steps * 1024}",
                )
                for attempt in range(1 + self.args.retries):  # a probe that shared the CPU is measured again
                    shutil.rmtree(out, ignore_errors=True)
                    (wall,) = self.run_many(
                        f"tput/{shape}/{precision}", [cmd], [OUT / "logs" / f"tput-{shape}-{precision}.log"]
                    )
                    if self.last_load["foreign_cores_mean"] <= self.args.max_foreign_cores:
                        break
                    self.log(
                        f"tput {shape} {precision}: shared with other processes "
                        f"({self.last_load['foreign_cores_mean']:.2f} cores); attempt {attempt + 1}"
                    )
                skip = 2 if steps >= 4 else (1 if steps >= 2 else 0)
                res = {obj: self._probe_rates(out / sub, skip) for obj, sub in OBJECTIVES.items()}
                res["pair_wall_s"] = wall
                res["foreign_load"] = self.last_load
                res["overhead_s"] = wall - max(res[o]["train_s"] for o in OBJECTIVES)
                res["note"] = f"{steps} steps of 16 x 256 tokens; rate over steps {skip + 1}..{steps}" + (
                    " (includes the first step's warm-up)" if skip == 0 else ""
                )
                entry[precision] = res
                self.log(
                    f"tput {shape} {precision}: mlm {res['mlm']['tokens_per_s']:.0f} tok/s "
                    f"({100 * res['mlm']['utilisation']:.1f}%), clm {res['clm']['tokens_per_s']:.0f} tok/s "
                    f"({100 * res['clm']['utilisation']:.1f}%), overhead {res['overhead_s']:.1f} s"
                )
                self.save()

    def budget(self, shape: str) -> dict:
        """Tokens for the three phases: the slower objective's run takes budget_s at the faster precision."""
        entry = self.data["throughput"][shape]
        precs = [p for p in ("fp32", "bf16") if p in entry]
        best = max(precs, key=lambda p: min(entry[p][o]["tokens_per_s"] for o in OBJECTIVES))
        res = entry[best]
        slow = min(OBJECTIVES, key=lambda o: res[o]["tokens_per_s"])
        r256 = res[slow]["tokens_per_s"]
        mlm_p = 0.3
        r512 = r256 * flops_per_token(shape, slow, 256, mlm_p) / flops_per_token(shape, slow, 512, mlm_p)
        overhead = self.args.overhead_factor * res["overhead_s"]
        seconds_per_token = PHASE_SHARES[0] / r256 + (PHASE_SHARES[1] + PHASE_SHARES[2]) / r512
        total = max(0.0, self.args.budget_s - overhead) / seconds_per_token
        p1 = max(4096, int(round(PHASE_SHARES[0] * total / 4096)) * 4096)
        p2 = max(8192, int(round(PHASE_SHARES[1] * total / 8192)) * 8192)
        return {
            "precision": best,
            "slower_objective": slow,
            "rate_seq256": r256,
            "rate_seq512_est": r512,
            "overhead_est_s": overhead,
            "tokens": [p1, p2, p2],
            "total_tokens": p1 + 2 * p2,
            "predicted_s": overhead + p1 / r256 + 2 * p2 / r512,
        }

    def _train_cmd(self, shape: str, plan: dict, extra: list[str], out: Path, objective: str | None = None):
        p1, p2, p3 = plan["tokens"]
        head = ["train", DEMO, "--objective", objective] if objective else ["pair", DEMO, "--parallel"]
        return self.ettin(
            *head,
            "--out",
            str(out),
            *shape_overrides(shape),
            f"train.precision={plan['precision']}",
            f"phases.0.tokens={p1}",
            f"phases.1.tokens={p2}",
            f"phases.2.tokens={p3}",
            *extra,
        )

    def _run_summary(self, run_dir: Path, t_start: float) -> dict:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        last = last_checkpoint(run_dir)
        meta = json.loads((last / "meta.json").read_text())
        uni = self.data.get("unigram", {}).get("entropy_pretrain_mix", 6.4)
        first_below = next((r["tokens"] for r in rows if r["loss_avg"] < uni + 0.1), None)
        left = next((r["tokens"] for r in rows if r["loss_avg"] < uni - 0.25), None)
        by_phase = {}
        for r in rows:
            by_phase.setdefault(r["phase"], []).append(r)
        every = max(1, len(rows) // 60)
        return {
            "train_wall_s": meta["time"] - t_start,
            "tokens": meta["tokens"],
            "checkpoint": str(last),
            "mean_tokens_per_s": meta["tokens"] / (meta["time"] - t_start),
            "phase_tokens_per_s": {
                k: statistics.median(r["tokens_per_s"] for r in v) for k, v in by_phase.items()
            },
            "phase_utilisation_vs_200G": {
                k: statistics.median(r["mfu"] for r in v) for k, v in by_phase.items()
            },
            "phase_end_loss_avg": {k: v[-1]["loss_avg"] for k, v in by_phase.items()},
            "plateau_reference": uni,
            "plateau_reached_tokens": first_below,
            "plateau_left_tokens": left,
            "curve": [[r["tokens"], round(r["loss_avg"], 4), r["phase"]] for r in rows[::every]]
            + [[rows[-1]["tokens"], round(rows[-1]["loss_avg"], 4), rows[-1]["phase"]]],
        }

    def stage_train(self) -> None:
        runs = self.data.setdefault("runs", {})
        plans = self.data.setdefault("plans", {})
        for shape in self.shapes():
            out = OUT / shape
            if (
                shape in runs
                and not self.args.force
                and all(last_checkpoint(out / s) for s in OBJECTIVES.values())
            ):
                continue
            plan = plans[shape] = self.budget(shape)
            self.log(
                f"train {shape}: {plan['precision']}, tokens {plan['tokens']} "
                f"(predicted {plan['predicted_s']:.0f} s for the {plan['slower_objective']})"
            )
            self.save()
            # The token budget is fixed beforehand: other people's load changes only the wall time (recorded).
            (wall,) = self.run_many(
                f"train/{shape}",
                [self._train_cmd(shape, plan, [], out)],
                [OUT / "logs" / f"train-{shape}.log"],
                patience_s=self.args.train_patience_s,
            )
            runs[shape] = {
                obj: self._run_summary(out / sub, self.last_start) for obj, sub in OBJECTIVES.items()
            }
            runs[shape]["pair_wall_s"] = wall
            runs[shape]["foreign_load"] = self.last_load
            self.log(
                f"train {shape}: pair {wall:.0f} s; "
                + ", ".join(
                    f"{o} {r['train_wall_s']:.0f} s, loss {r['phase_end_loss_avg']['decay']:.3f}"
                    for o, r in ((o, runs[shape][o]) for o in OBJECTIVES)
                )
            )
            self.save()

    def _eval(self, key: str, items: list[tuple[str, Path, Path]]) -> dict:
        """items: (label, checkpoint, out folder); two at a time; returns label -> lm results."""
        extra = [f"--set=lm.limit={self.args.lm_limit}"] if self.args.lm_limit else []
        results = {}
        for i in range(0, len(items), 2):
            chunk = items[i : i + 2]
            cmds = [
                self.ettin("eval", str(ck), "--tasks", "lm", "--out", str(o), "--threads", "1", *extra)
                for _, ck, o in chunk
            ]
            logs = [OUT / "logs" / f"eval-{label.replace('/', '-')}.log" for label, _, _ in chunk]
            walls = self.run_many(f"{key}/{chunk[0][0]}", cmds, logs, patience_s=0)
            for (label, ck, o), wall in zip(chunk, walls):
                results[label] = read_lm(o, ck) | {"eval_wall_s": wall, "foreign_load": self.last_load}
        return results

    def stage_eval(self) -> None:
        evals = self.data.setdefault("eval", {})
        items = []
        for shape in self.shapes():
            for obj, sub in OBJECTIVES.items():
                ck = last_checkpoint(OUT / shape / sub)
                if ck is None or (
                    f"{shape}/{obj}" in evals
                    and not self.args.force
                    and evals[f"{shape}/{obj}"].get("checkpoint") == str(ck)
                ):
                    continue
                items.append((f"{shape}/{obj}", ck, OUT / "eval" / shape))
        for label, res in self._eval("eval", items).items():
            evals[label] = res
            self.log(
                f"eval {label}: held-out loss {res['loss']:.4f} +- {res['loss_se']:.4f}"
                + (f", masked acc {res['masked_accuracy']:.4f}" if "masked_accuracy" in res else "")
            )
        self.save()

    def stage_lr(self) -> None:
        """The best encoder shape again at other peak learning rates, same tokens (--lr-objectives mlm,clm
        also checks the decoder: the demo's recipe gives both models one lr). Runs go two at a time."""
        evals = self.data.get("eval", {})
        enc = {
            k.split("/")[0]: v["loss"]
            for k, v in evals.items()
            if k.endswith("/mlm") and k.split("/")[0] in self.shapes()
        }
        if not enc:
            self.log("lr: no encoder evaluations yet")
            return
        shape = min(enc, key=enc.get)
        plan = self.data["plans"][shape]
        lrs = [float(x) for x in self.args.lrs.split(",")]
        lr_data = self.data.setdefault("lr", {"shape": shape, "base_lr": 3e-3, "runs": {}})
        if lr_data.get("shape") != shape:  # another shape became the best encoder: start its lr runs afresh
            lr_data = self.data["lr"] = {"shape": shape, "base_lr": 3e-3, "runs": {}}

        def name(obj: str, lr: float) -> str:  # encoder runs keep the plain names of the first sweep
            return f"{lr:g}" if obj == "mlm" else f"{obj}/{lr:g}"

        todo = [
            (obj, lr)
            for obj in self.args.lr_objectives.split(",")
            for lr in lrs
            if name(obj, lr) not in lr_data["runs"] or self.args.force
        ]
        for i in range(0, len(todo), 2):
            chunk = todo[i : i + 2]
            labels = [f"{shape}-lr{lr:g}" if obj == "mlm" else f"{shape}-{obj}-lr{lr:g}" for obj, lr in chunk]
            outs = [OUT / "lr" / label for label in labels]
            cmds = [
                self._train_cmd(shape, plan, [f"train.lr={lr:g}", "train.progress=false"], o, obj)
                for (obj, lr), o in zip(chunk, outs)
            ]
            key = "lr/" + ",".join(labels)
            done = lr_data.setdefault("trained", {}).get(key)
            if done and not self.args.force and all(last_checkpoint(o) for o in outs):
                load, t0 = done["load"], done["start"]  # trained, not yet evaluated
            else:
                for o in outs:
                    shutil.rmtree(o, ignore_errors=True)
                self.run_many(
                    key,
                    cmds,
                    [OUT / "logs" / f"lr-{label}.log" for label in labels],
                    patience_s=self.args.train_patience_s,
                )
                load, t0 = self.last_load, self.last_start
                lr_data["trained"][key] = {"load": load, "start": t0}
                self.save()
            ev = self._eval(
                "lr-eval",
                [(label, last_checkpoint(o), OUT / "eval" / "lr") for label, o in zip(labels, outs)],
            )
            for (obj, lr), label, o in zip(chunk, labels, outs):
                summary = self._run_summary(o, t0)
                summary["eval"] = ev[label]
                summary["foreign_load"] = load
                lr_data["runs"][name(obj, lr)] = summary
                self.log(
                    f"lr {shape} {obj} {lr:g}: held-out loss {summary['eval']['loss']:.4f}"
                    + (f", masked acc {summary['eval']['masked_accuracy']:.4f}" if obj == "mlm" else "")
                )
            self.save()

    def stage_curve(self) -> None:
        """Held-out masked loss at every kept encoder checkpoint (every 512k tokens and each phase end): when
        the encoder really leaves the unigram plateau. Its training loss can fall while the held-out loss does
        not: training also scores the masked positions that keep or swap their token (10% + 10%), the
        evaluation replaces every scored token by [MASK]."""
        curves = self.data.setdefault("heldout_curve", {})
        items = []
        for shape in self.shapes():
            folder = OUT / shape / "encoder" / "checkpoints"
            if not folder.is_dir():
                continue
            for ck in sorted(p for p in folder.iterdir() if (p / "meta.json").is_file()):
                label = f"{shape}/{ck.name}"
                if label not in curves or self.args.force:
                    items.append((label, ck, OUT / "eval" / "curve" / shape))
        for label, res in self._eval("curve", items).items():
            curves[label] = {k: res.get(k) for k in ("loss", "loss_se", "masked_accuracy", "tokens_trained")}
            self.log(f"curve {label}: tokens {res.get('tokens_trained')}, held-out loss {res['loss']:.4f}")
        self.save()

    def stage_peak_end(self) -> None:
        """The peak again after the sweep (only into peak_history): how much the machine drifted."""
        self.stage_peak()

    def stage_report(self) -> None:
        text = report(self.data)
        (OUT / "table.md").write_text(text)
        print(text)



def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default="peak,unigram,tput,train,eval,curve,lr,peak_end,report")
    p.add_argument("--shapes", default=",".join(SHAPES), help="LAYERSxHIDDEN, comma-separated")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--budget-s", type=float, default=300.0, help="wall seconds of one core per model")
    p.add_argument(
        "--overhead-factor",
        type=float,
        default=2.0,
        help="the 3-phase run's start-up/checkpoint/export overhead as a multiple of the 1-phase probe's",
    )
    p.add_argument("--fp32-probe-steps", type=int, default=20)
    p.add_argument(
        "--bf16-probe-steps", type=int, default=1, help="bf16 is slow here: one step (with warm-up)"
    )
    p.add_argument("--lrs", default="2e-3,5e-3,8e-3,1.2e-2", help="encoder learning rates for the lr stage")
    p.add_argument("--lr-objectives", default="mlm", help="mlm, or mlm,clm to check the decoder too")
    p.add_argument("--lm-limit", type=int, default=None, help="lm.limit for ettin eval (default: the task's)")
    p.add_argument(
        "--patience-s",
        type=float,
        default=3600.0,
        help="longest wait for other people's processes to leave the CPU before each measurement",
    )
    p.add_argument(
        "--train-patience-s",
        type=float,
        default=600.0,
        help="the same before training runs (their token budgets are fixed: load only stretches wall time)",
    )
    p.add_argument(
        "--max-foreign-cores",
        type=float,
        default=0.1,
        help="a throughput probe during which other processes used more is measured again",
    )
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--force", action="store_true", help="redo finished probes, runs and evaluations")
    args = p.parse_args()
    os.chdir(ROOT)
    os.environ.update(ENV)
    sweep = Sweep(args)
    sweep.data["date_start"] = (
        sweep.data.get("date_start") or datetime.datetime.now(datetime.timezone.utc).isoformat()
    )
    sweep.data["machine"] = {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}
    sweep.data["settings"] = {k: v for k, v in vars(args).items() if k != "force"}
    t_all = time.perf_counter()
    for stage in args.stages.split(","):
        t0 = time.perf_counter()
        getattr(sweep, f"stage_{stage}")()
        sweep.data["stage_seconds"][stage] = time.perf_counter() - t0
        sweep.save()
    sweep.data["date_end"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    sweep.data["last_invocation_s"] = time.perf_counter() - t_all
    sweep.data.setdefault("invocations", []).append(
        {
            "argv": sys.argv[1:],
            "end": sweep.data["date_end"],
            "seconds": time.perf_counter() - t_all,
            "stage_seconds": {k: sweep.data["stage_seconds"][k] for k in args.stages.split(",")},
        }
    )
    sweep.save()
    return 0



if __name__ == "__main__":
    sys.exit(main())
