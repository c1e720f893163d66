"""Each claim over training tokens (the report's claim figures): ettin.eval.compare's paired Multi-Bootstrap row at
every kept checkpoint of both models, over the pre-training seeds they share (pure; no I/O)."""

from __future__ import annotations

import numpy as np

from ettin.eval.compare import CLAIMS, has_examples, task_row


def curves(checkpoints: dict[str, dict], resamples: int = 500) -> list[dict]:
    """Each claim comparison over training tokens, from {role: {seed: [results of that seed's checkpoints,
    ordered by training tokens]}} (a role's plain list is seed 0's). Checkpoints pair by position within a
    seed and across seeds (x: the mean of their tokens); a measure's curve has the positions where every one of
    those checkpoints has its per-example scores (at least two); a point is testable when both models are above their
    baselines there; first_testable is the tokens from which every later point is testable."""
    runs = {role: {0: v} if isinstance(v, list) else dict(sorted((int(s), c) for s, c in v.items()))
            for role, v in checkpoints.items()}
    out = []
    for claim in CLAIMS:
        for comp in claim.comparisons:
            fav, oth = runs.get(comp.favoured, {}), runs.get(comp.other, {})
            seeds = [s for s in fav if s in oth]
            if not seeds:
                continue
            length = min(min(len(fav[s]), len(oth[s])) for s in seeds)
            if length < 2:
                continue
            at = [({s: fav[s][k] for s in seeds}, {s: oth[s][k] for s in seeds}) for k in range(length)]
            for m in comp.measures:
                # the checkpoints where this measure was evaluated for every seed of both models (a costly task may
                # be scored on a subset of the kept checkpoints)
                scored = [(f, o) for f, o in at if all(has_examples(r, m) for r in [*f.values(), *o.values()])]
                if len(scored) < 2:
                    continue
                points = []
                for f, o in scored:
                    row = task_row(f, o, m, (comp.favoured, comp.other), 0, resamples)
                    tokens = float(np.mean([r["model"]["tokens"] for r in [*f.values(), *o.values()]]))
                    points.append({"tokens": tokens, "difference": row["difference"],
                                   "per_seed": row["per_seed_difference"],
                                   "band": (min(row["per_seed_difference"]), max(row["per_seed_difference"])),
                                   "interval": row["interval"], "testable": row["verdict"] != "not testable",
                                   "seeds": row["seeds"]})
                first = None
                for p in reversed(points):
                    if not p["testable"]:
                        break
                    first = p["tokens"]
                out.append({"claim": claim.id, "label": m.label, "metric": row["metric"], "favoured": comp.favoured,
                            "other": comp.other, "points": points, "first_testable": first})
    return out
