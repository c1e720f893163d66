"""The loop on real prepared data: the recipe trains its tokenizer and prepares shards on first use,
the pair reads the same batches, and the held-out tail of every source is never trained on."""

import json
import math

import numpy as np
import pytest

from ettin.cli import main
from ettin.data.holdout import held_out_count
from ettin.data.ready import RecipeData
from ettin.train.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def recipe_file(shared_data, tmp_path):
    sources = {}
    for name, count in (("wiki", 150), ("moby", 8)):
        src = shared_data / "pretrain" / ("wikipedia_vital_summaries_en.jsonl" if name == "wiki" else
                                          "moby_dick_chapters.jsonl")
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(src.read_text().splitlines(True)[:count]))
        sources[name] = path
    prepared = tmp_path / "prepared"
    mixture = {"sources": [{"name": n, "path": str(prepared), "subset": n, "weight": 1} for n in sources]}
    recipe = {
        "name": "real", "seed": 1, "model": {"size": "tiny"},
        "data": {"tokenizer": str(tmp_path / "tok" / "tokenizer.json"), "holdout_fraction": 0.1,
                 "prepare": {"out": str(prepared), "tokenizer_vocab_size": 320, "workers": 0,
                             "sources": [str(p) for p in sources.values()]},
                 "mixtures": {"pre": {"name": "pre", **mixture}, "dec": {"name": "dec", **mixture}}},
        "train": {"global_batch_size": 4, "micro_batch_size": 2, "progress": False, "tensorboard": False},
        "phases": [
            {"name": "pretrain", "tokens": 512, "seq_len": 64, "mixture": "pre"},
            {"name": "decay", "tokens": 512, "seq_len": 64, "mixture": "dec", "mlm_probability": 0.15,
             "schedule": "one_minus_sqrt", "lr_start": 0.5, "lr_end": 0.02, "global_rope_theta": 160000},
        ],
    }
    path = tmp_path / "real.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def test_pair_on_prepared_data_holds_out_the_tail(recipe_file, tmp_path):
    out = tmp_path / "runs"
    assert main(["pair", str(recipe_file), "--out", str(out)]) == 0
    pair = json.loads((out / "pair.json").read_text())
    assert pair["same_batch_order"] and len(pair["encoder"]["pretrain"]["fingerprint"]) == 64
    steps = {}
    for sub in ("encoder", "decoder"):
        rows = [json.loads(line) for line in (out / sub / "metrics.jsonl").read_text().splitlines()]
        assert all(math.isfinite(r["loss"]) for r in rows)
        for phase in ("pretrain", "decay"):  # each phase ends at the first step whose real tokens reach 512
            counts = [r["phase_tokens"] for r in rows if r["phase"] == phase]
            assert counts[-1] >= 512 and all(c < 512 for c in counts[:-1]) and len(counts) >= 2, (phase, counts)
        steps[sub] = [(r["phase"], r["step"], r["tokens"]) for r in rows]
        assert (out / sub / "tokenizer.json").is_file() and (out / sub / "final" / "config.json").is_file()
    assert steps["encoder"] == steps["decoder"]  # the pair takes the same steps over the same real tokens

    recipe = load_recipe(recipe_file)
    data = RecipeData.open(recipe)
    assert data.tokenizer.vocab_size == 320
    loader = data.phase_loader(recipe.phases[0], "clm", 0, 1)
    for spec, ds, index in zip(loader.mixture.sources, loader.datasets, loader.indices):
        lo, hi = ds._ds.source_ranges[spec.subset]
        keep_end = hi - held_out_count(hi - lo, 0.1)
        assert keep_end < hi  # something is held out
        docs = {int(d) for d in index.spans[:, 0]}
        assert min(docs) >= lo and max(docs) < keep_end  # never a held-out document
        assert max(docs) == keep_end - 1  # and every other one is used


def test_a_real_token_budget_ends_within_one_batch(recipe_file, tmp_path):
    """On real (chunked, unpacked) data the rows are partly padding: a budget of N real tokens takes more steps
    than N / (rows x seq_len), ends at the first step that reaches N, and every step's count is the batch's
    attention-mask sum over all ranks (the encoder's; the decoder's rows of a cut document lack [SEP])."""
    budget = 3000
    out = tmp_path / "run"
    assert main(["train", str(recipe_file), "--out", str(out), f"phases.0.tokens={budget}", "train.log_every=1",
                 "train.save_every_tokens=1000"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    pre = [r for r in rows if r["phase"] == "pretrain"]
    slots = 4 * 64
    assert pre[-1]["phase_tokens"] >= budget > pre[-2]["phase_tokens"]
    assert pre[-1]["phase_tokens"] - budget < slots  # within one batch of the budget
    assert len(pre) > math.ceil(budget / slots)  # padding is not counted: more steps than slots would take
    recipe = load_recipe(recipe_file, [f"phases.0.tokens={budget}"])
    data = RecipeData.open(recipe)
    ranks = {obj: [data.phase_loader(recipe.phases[0], obj, r, 2) for r in range(2)] for obj in ("mlm", "clm")}
    for step, row in enumerate(pre):
        real = ranks["mlm"][0].global_tokens(step)
        assert real == sum(int(loader.batch(step)["attention_mask"].sum()) for loader in ranks["mlm"])
        assert real >= sum(int(loader.batch(step)["attention_mask"].sum()) for loader in ranks["clm"])
        assert row["phase_tokens"] - (pre[step - 1]["phase_tokens"] if step else 0) == real
    # checkpoints every 1000 real tokens (each at the first step past a multiple), and at the end
    names = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("pretrain"))
    crossed = [r["step"] for i, r in enumerate(pre)
               if r["phase_tokens"] // 1000 > (pre[i - 1]["phase_tokens"] if i else 0) // 1000 or r is pre[-1]]
    assert names == [f"pretrain-step{s:07d}" for s in crossed]


def test_a_checkpoint_that_names_a_runtime_backend_loads_and_evaluates_anywhere(recipe_file, tmp_path):
    """Checkpoints written before the attention backend became a runtime setting stored it in their model config: one
    that says flash (a CUDA-only kernel) loads on a CPU with the setting ignored, and `ettin eval` scores it."""
    from ettin.train.checkpoint import META, latest_checkpoint, load_model

    out = tmp_path / "run"
    assert main(["train", str(recipe_file), "--out", str(out)]) == 0
    ckpt = latest_checkpoint(out)
    meta = json.loads((ckpt / META).read_text())
    assert "attn_backend" not in meta["model_config"]  # not written any more
    meta["model_config"].update(attn_backend="flash", loss_chunk_size=512)  # as older checkpoints have it
    (ckpt / META).write_text(json.dumps(meta))
    model = load_model(ckpt)
    assert model.attn_backend == "auto" and not hasattr(model.config, "attn_backend")
    assert main(["eval", str(ckpt), "--tasks", "lm", "--limit", "4", "--out", str(tmp_path / "eval")]) == 0
    results = [json.loads(p.read_text()) for p in (tmp_path / "eval").rglob("*.json")]
    assert any("lm" in r.get("tasks", {}) for r in results)


def test_held_out_rows_end_a_document_only_at_its_last_token():
    from ettin.train.heldout import document_rows

    doc = np.arange(100)
    whole = document_rows(doc, 1000, 64)  # two rows, the second ends the document
    assert [len(r[0][0]) for r in whole] == [64, 36] and [r[0][1] for r in whole] == [False, True]
    cut = document_rows(doc, 80, 64)  # cut short by the budget: the last row (64..80) does not end it
    assert [len(r[0][0]) for r in cut] == [64, 16] and [r[0][1] for r in cut] == [False, False]
    assert document_rows(doc, 100, 50)[-1][0][1] and not document_rows(doc, 99, 50)[-1][0][1]
