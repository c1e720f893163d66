"""Every preset and cross-objective recipe trains what the published Ettin YAMLs train.

The table tests/published/ettin_training_yamls.csv has one row per published training YAML (48: six sizes x
{encoder, decoder} x {pre-training, extension, decay}, and the twelve cross-objective runs), each naming its file
and the repo's commit; scripts/published_recipes.py made it from JHU-CLSP/ettin-encoder-vs-decoder itself. Each
row is checked against `ettin train RECIPE --objective OBJ --plan` (the command's own JSON)."""

import csv
import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from ettin.cli import main

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "tests" / "published" / "ettin_training_yamls.csv"
ROWS = list(csv.DictReader(TABLE.open()))


def recipe_of(row: dict) -> Path:
    if row["phase"] == "cross":
        return REPO / "recipes" / "cross" / f"{row['run']}-{row['size']}.yaml"
    return REPO / "recipes" / f"{row['size']}.yaml"


_PLANS: dict[tuple[Path, str], dict] = {}


def plan_of(recipe: Path, objective: str) -> dict:
    if (recipe, objective) not in _PLANS:
        out = io.StringIO()
        with redirect_stdout(out):
            assert main(["train", str(recipe), "--objective", objective, "--plan"]) == 0
        _PLANS[recipe, objective] = json.loads(out.getvalue())  # stdout holds the JSON object and nothing else
    return _PLANS[recipe, objective]


def test_the_table_covers_every_published_run():
    assert len(ROWS) == 48 and len({r["file"] for r in ROWS}) == 48 and len({r["commit"] for r in ROWS}) == 1
    kinds = {(r["size"], r["run"], r["phase"]) for r in ROWS}
    assert len(kinds) == 48  # 6 sizes x (2 objectives x 3 phases + 2 cross directions)


@pytest.mark.parametrize("row", ROWS, ids=[r["file"].removeprefix("pretraining/configs/") for r in ROWS])
def test_plan_matches_the_published_yaml(row):
    plan = plan_of(recipe_of(row), row["objective"])
    (phase,) = [p for p in plan["phases"] if p["name"] == row["phase"]]
    where = f"{recipe_of(row).relative_to(REPO)} --objective {row['objective']}, phase {row['phase']} vs {row['file']}"
    exact = {"seq_len": int, "global_batch": int, "micro_batch": int, "tokens": int, "token_unit": str,
             "warmup_tokens": int, "decay_tokens": int}
    for key, kind in exact.items():
        assert phase[key] == kind(row[key]), f"{where}: {key} {phase[key]!r} != published {row[key]!r}"
    assert (phase["decay_shape"] or "") == row["decay_shape"], where
    for key in ("lr_start", "lr_end", "global_rope_theta", "local_rope_theta"):
        assert phase[key] == pytest.approx(float(row[key]), rel=1e-9), f"{where}: {key}"
    assert phase["mlm_probability"] == pytest.approx(float(row["mlm_probability"])), where
    if row["objective"] == "clm":
        assert phase["mlm_probability"] == 0.0, where  # a decoder masks nothing
    assert plan["objective"] == row["objective"]
    model, opt = plan["model"], plan["optimizer"]
    assert model["attention_output_dropout"] == float(row["attention_output_dropout"]) == 0.1, where
    assert model["attention_dropout"] == float(row["attention_dropout"]) == 0.0, where
    assert row["init"] == "full_megatron" and model["init"] == {"std": 0.02, "cutoff_factor": 2.0}
    assert opt["betas"] == [float(row["beta1"]), float(row["beta2"])] and opt["eps"] == float(row["eps"]), where
    assert opt["weight_decay"] == pytest.approx(float(row["weight_decay"])), where
    if row["phase"] in ("pretrain", "cross"):  # the phase whose optimizer.lr is the run's peak
        assert opt["lr"] == pytest.approx(float(row["lr"])), where
    # the published runs count real tokens and do not pack rows; ettin's chunked instances do not pack either
    assert row["token_unit"] == "real" and row["sequence_packing"] == "False"
    assert phase["save_every_tokens"] == int(row["save_every_tokens"]), where


def test_the_phase_lrs_chain_as_published():
    """Each published extension starts at the pre-training peak and each decay at half of it: the peak in the
    table's pre-training row is the one the recipe's phases scale."""
    for size in {r["size"] for r in ROWS}:
        for objective in ("mlm", "clm"):
            by_phase = {r["phase"]: r for r in ROWS if r["size"] == size and r["objective"] == objective
                        and r["phase"] != "cross"}
            peak = float(by_phase["pretrain"]["lr"])
            assert float(by_phase["extension"]["lr_start"]) == pytest.approx(peak)
            assert float(by_phase["decay"]["lr_start"]) == pytest.approx(peak / 2)
            assert float(by_phase["decay"]["lr_end"]) == pytest.approx(0.02 * peak)
