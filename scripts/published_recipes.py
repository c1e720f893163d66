"""Tabulate what the published Ettin training YAMLs train: one row per YAML, naming its file and commit.

    git clone https://github.com/JHU-CLSP/ettin-encoder-vs-decoder /tmp/ettin-ref
    python scripts/published_recipes.py /tmp/ettin-ref > tests/published/ettin_training_yamls.csv

Reads the 48 files under pretraining/configs/{standard,cross-train} at the clone's HEAD (with `git show`, so a bare
clone works too) and writes the values `ettin train --plan` reports, read the way the published trainer reads them
(orionw/bert24: main.py, src/scheduler.py, src/bert_layers/configuration_bert.py):
- budgets, warmup and decay count real tokens (`count_padding_tokens: false`: token_unit "real");
- `warmup_stable_decay` with `t_decay: 0tok` has no decay (decay_shape empty); with a decay it is linear
  (`1 - fraction * (1 - alpha_f)`); `one_minus_sqrt` decays over `t_decay` (`${max_duration}`: the whole phase);
- lr_start is `optimizer.lr` (after warmup), lr_end is `optimizer.lr x alpha_f` when there is a decay;
- `local_attn_rotary_emb_base` unset or -1 means the global `rotary_emb_base` on local layers too;
- the model trained: flex_bert and flex_gpt_to_bert are encoders (mlm), flex_gpt and flex_bert_to_gpt decoders
  (clm); a decoder's mlm_probability is the YAML's 0.0 (it masks nothing).
tests/test_recipes_published.py checks every preset and cross recipe's `--plan` against the table.
"""

from __future__ import annotations

import csv
import subprocess
import sys

import yaml

SIZES = {"very_tiny": "17m", "tiny": "32m", "mini": "68m", "base": "150m", "large": "400m", "huge": "1b"}
PHASES = {"": "pretrain", "de_decay": "extension", "prolong_decay": "decay"}
MODELS = {"flex_bert": ("mlm", "encoder"), "flex_gpt": ("clm", "decoder"),
          "flex_gpt_to_bert": ("mlm", "encoder-from-decoder"), "flex_bert_to_gpt": ("clm", "decoder-from-encoder")}
COLUMNS = ["file", "commit", "size", "run", "objective", "phase", "seq_len", "global_batch", "micro_batch",
           "tokens", "token_unit", "warmup_tokens", "decay_tokens", "decay_shape", "lr", "lr_start", "lr_end",
           "mlm_probability", "global_rope_theta", "local_rope_theta", "attention_output_dropout",
           "attention_dropout", "embedding_dropout", "mlp_dropout", "init", "beta1", "beta2", "eps",
           "weight_decay", "save_every_tokens", "batch_size_warmup_tokens", "sequence_packing", "reset_time",
           "restart_override"]


def tokens(value, max_duration: int | None = None) -> int:
    text = str(value).strip()
    if text == "${max_duration}":
        return int(max_duration)
    return int(text.removesuffix("tok").replace("_", ""))


def row(path: str, commit: str, text: str) -> dict:
    d = yaml.safe_load(text)
    mc = d["model"]["model_config"]
    parts = path.split("/")  # pretraining/configs/{standard,cross-train}/<size>[/<phase dir>]/<file>
    size = SIZES[parts[3]]
    objective, run = MODELS[d["model"]["name"]]
    assert bool(mc.get("causal_mask", False)) == (objective == "clm"), path
    phase = "cross" if parts[2] == "cross-train" else PHASES["" if len(parts) == 5 else parts[4]]
    duration = tokens(d["max_duration"])
    sched, opt = d["scheduler"], d["optimizer"]
    lr = float(opt["lr"])
    warmup = tokens(sched["t_warmup"]) if "t_warmup" in sched else 0
    decay = tokens(sched.get("t_decay", "0tok"), duration)
    shape = {"warmup_stable_decay": "linear", "one_minus_sqrt": "1-sqrt"}[sched["name"]] if decay else ""
    local = mc.get("local_attn_rotary_emb_base", -1)
    betas = opt["betas"]
    return {
        "file": path, "commit": commit, "size": size, "run": run, "objective": objective, "phase": phase,
        "seq_len": d["max_seq_len"], "global_batch": d["global_train_batch_size"],
        "micro_batch": d["device_train_microbatch_size"], "tokens": duration,
        "token_unit": "slots" if d.get("count_padding_tokens", True) else "real",
        "warmup_tokens": warmup, "decay_tokens": decay, "decay_shape": shape, "lr": lr, "lr_start": lr,
        "lr_end": lr * float(sched["alpha_f"]) if decay else lr,
        "mlm_probability": d["mlm_probability"],
        "global_rope_theta": float(mc["rotary_emb_base"]),
        "local_rope_theta": float(mc["rotary_emb_base"] if local in (None, -1) else local),
        "attention_output_dropout": mc["attn_out_dropout_prob"],
        "attention_dropout": mc["attention_probs_dropout_prob"], "embedding_dropout": mc["embed_dropout_prob"],
        "mlp_dropout": mc["mlp_dropout_prob"], "init": mc["init_method"], "beta1": betas[0], "beta2": betas[1],
        "eps": float(opt["eps"]), "weight_decay": float(opt["weight_decay"]),
        "save_every_tokens": tokens(d["save_interval"]),
        "batch_size_warmup_tokens": tokens(d["train_loader"].get("batch_size_warmup_tokens", "0tok")),
        "sequence_packing": d["train_loader"].get("sequence_packing", False),
        "reset_time": d.get("reset_time", False), "restart_override": d.get("restart_override", False),
    }


def main(repo: str) -> None:
    def git(*args: str) -> str:
        return subprocess.check_output(["git", "-C", repo, *args], text=True)

    commit = git("rev-parse", "HEAD").strip()
    files = sorted(f for f in git("ls-tree", "-r", "--name-only", "HEAD", "pretraining/configs").split()
                   if f.endswith(".yaml") and f.split("/")[2] in ("standard", "cross-train"))
    writer = csv.DictWriter(sys.stdout, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for path in files:
        writer.writerow(row(path, commit, git("show", f"HEAD:{path}")))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
