"""The loop on real prepared data: the recipe trains its tokenizer and prepares shards on first use,
the pair reads the same batches, and the held-out tail of every source is never trained on."""

import json
import math

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
    for sub in ("encoder", "decoder"):
        rows = [json.loads(line) for line in (out / sub / "metrics.jsonl").read_text().splitlines()]
        assert all(math.isfinite(r["loss"]) for r in rows)
        for phase in ("pretrain", "decay"):  # each phase ends at the first step whose real tokens reach its budget
            counts = [r["phase_tokens"] for r in rows if r["phase"] == phase]
            assert counts[-1] >= 512 and all(c < 512 for c in counts[:-1]) and len(counts) >= 2, (phase, counts)
        assert (out / sub / "tokenizer.json").is_file() and (out / sub / "final" / "config.json").is_file()

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
