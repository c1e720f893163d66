"""Cached greedy decoding: ettin's `generate` against transformers' `generate` on the same weights, same run.

    .venv/bin/python bench/bench_generate.py --padded                      # 17m + 32m, batch 1 + 8 (+ 8 padded), fp32
    .venv/bin/python bench/bench_generate.py --padded --compiled           # and ettin's Decoder(model, compile=True)
    .venv/bin/python bench/bench_generate.py --threads 1                   # both on one intra-op thread
    .venv/bin/python bench/bench_generate.py --sizes 17m --batches 1 --repeats 5

Results and what they mean: bench/README.md ("Cached decoding").

Each size: a decoder with the real 50,368 vocabulary and random weights, exported to transformers
(`ModernBertDecoderForCausalLM`, SDPA attention) through `ettin.hf.save_pretrained`. Each batch: prompts of
`--prompt` random tokens, `--new` tokens generated greedily (no EOS stop: transformers gets `min_new_tokens`), timed
prompt included; ettin decodes through one `ettin.inference.Decoder` kept for the run (its weight copies' buffers
are made once, as a caller that generates many times keeps them). The two implementations alternate call by call,
`--repeats` times each; the best time of each gives its tokens/s (new tokens of all rows / seconds) and the ratio.
Rows with a padded batch (`--padded`) left-pad every other prompt. The outputs are compared token for token and the row says whether they were identical (where
not: the first new token that differs, and the eager model's margin between its top two logits there, which says
whether the two fell on opposite sides of a near-tie). With `--compiled`, a `Decoder(model, compile=True)` of the
same ettin model joins the alternation; its first call of each batch shape (the compile, prompt and steps) is timed
apart and reported as `compile_s`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from ettin.config import preset  # noqa: E402
from ettin.hf import save_pretrained  # noqa: E402
from ettin.inference import Decoder, generate  # noqa: E402
from ettin.model import EttinModel  # noqa: E402

V = 50368
PAD = 3


def models(size: str, folder: str, std: float):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    ours = EttinModel(preset(size, "clm", vocab_size=V, pad_token_id=PAD, bos_token_id=1, eos_token_id=2,
                             mask_token_id=4)).eval()
    with torch.no_grad():  # weights larger than the init's, so the greedy choice is not a near-tie
        for p in ours.parameters():
            if p.dim() > 1:
                p.normal_(0, std)
    save_pretrained(ours, folder, weights_only=True)
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    return ours, hf


def prompts(batch: int, length: int, padded: bool, g: torch.Generator):
    ids = torch.randint(5, V, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if padded:
        for r in range(1, batch, 2):  # every other row shorter, left-padded
            n = length // 2 + r
            ids[r, : length - n] = PAD
            mask[r, : length - n] = 0
    return ids, mask


def divergence(ours: EttinModel, got: torch.Tensor, ref: torch.Tensor, prompt: int, mask) -> str:
    """'identical', or where `got` first departs from `ref` and the top-2 logit margin of `ours` there."""
    if torch.equal(got, ref):
        return "identical"
    row, col = (got != ref).nonzero()[0].tolist()
    with torch.inference_mode():
        m = None if mask is None else torch.cat([mask[row : row + 1], torch.ones(1, col - prompt, dtype=mask.dtype)], 1)
        logits = ours(ref[row : row + 1, :col], attention_mask=m).logits[0, -1]
    top = logits.float().topk(2).values
    return f"differ from new token {col - prompt} of row {row} (top-2 margin there {float(top[0] - top[1]):.1e})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["17m", "32m"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--padded", action="store_true", help="also a left-padded row for each batch above 1")
    p.add_argument("--std", type=float, default=0.1, help="std of the random weight matrices")
    p.add_argument("--threads", type=int, help="torch intra-op threads for both (default: torch's)")
    p.add_argument("--compiled", action="store_true", help="also ettin's Decoder(model, compile=True)")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, prompt {args.prompt}, new {args.new}, "
          f"best of {args.repeats}, interleaved; load average {os.getloadavg()[0]:.1f}")
    rows = []
    g = torch.Generator().manual_seed(0)
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            ours, hf = models(size, tmp, args.std)
        eager = Decoder(ours)
        compiled = Decoder(ours, compile=True) if args.compiled else None
        cases = [(b, False) for b in args.batches]
        if args.padded:
            cases += [(b, True) for b in args.batches if b > 1]
        for batch, padded in cases:
            ids, mask = prompts(batch, args.prompt, padded, g)
            kw = dict(attention_mask=mask) if padded else {}
            runs = {
                "transformers": lambda: hf.generate(ids, max_new_tokens=args.new, min_new_tokens=args.new,  # noqa: B023
                                                    do_sample=False, eos_token_id=None, pad_token_id=PAD, **kw),  # noqa: B023
                "ettin": lambda: generate(eager, ids, max_new_tokens=args.new, **kw),  # noqa: B023
            }
            row = dict(size=size, batch=batch, padded=padded, threads=torch.get_num_threads())
            if compiled is not None:
                runs["compiled"] = lambda: generate(compiled, ids, max_new_tokens=args.new, **kw)  # noqa: B023
                t = time.perf_counter()
                with torch.inference_mode():
                    runs["compiled"]()
                row["compile_s"] = time.perf_counter() - t
            best = {k: float("inf") for k in runs}
            outs = {}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    t = time.perf_counter()
                    with torch.inference_mode():
                        outs[name] = fn()
                    best[name] = min(best[name], time.perf_counter() - t)
            tps = {k: batch * args.new / best[k] for k in runs}
            row.update(transformers_tps=tps["transformers"], ettin_tps=tps["ettin"],
                       ratio=tps["ettin"] / tps["transformers"],
                       outputs=divergence(ours, outs["ettin"], outs["transformers"], args.prompt, kw.get("attention_mask")))
            line = (f"{size} batch {batch}{' padded' if padded else ''}: transformers {tps['transformers']:.0f} tok/s, "
                    f"ettin {tps['ettin']:.0f} tok/s, ratio {row['ratio']:.2f}, outputs {row['outputs']}")
            if compiled is not None:
                row.update(compiled_tps=tps["compiled"], compiled_ratio=tps["compiled"] / tps["transformers"],
                           compiled_outputs=divergence(ours, outs["compiled"], outs["transformers"], args.prompt,
                                                       kw.get("attention_mask")))
                line += (f"; compiled {tps['compiled']:.0f} tok/s, ratio {row['compiled_ratio']:.2f}, outputs "
                         f"{row['compiled_outputs']}, first call {row['compile_s']:.1f} s")
            rows.append(row)
            print(line, flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
