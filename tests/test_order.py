"""The published batch order: `ettin data where` finds every planted sequence (checked against a brute-force
scan of the same rows), and the replay source serves the recorded rows step by step."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from ettin.cli import main
from ettin.data import order
from ettin.data.collate import SpecialTokens
from ettin.io import UserError
from published_fixtures import write_order


def _random_steps(rng, n_steps, rows, vocab=3000, first=1):
    return {s: [rng.integers(10, vocab, rng.integers(5, 60)).tolist() for _ in range(rows)]
            for s in range(first, first + n_steps)}


def _brute(root_steps, needle):
    hits = []
    for folder, steps in root_steps:
        for s in sorted(steps):
            for r, row in enumerate(steps[s]):
                if any(row[i:i + len(needle)] == needle for i in range(len(row) - len(needle) + 1)):
                    hits.append((folder, s, r))
    return hits


@pytest.fixture
def planted(tmp_path):
    rng = np.random.default_rng(0)
    needle = [60001, 7, 60002]  # ids above the random range: found only where planted
    a = _random_steps(rng, 6, 5)
    b = _random_steps(rng, 4, 5)  # the next checkpoint interval: steps restart at 1
    c = _random_steps(rng, 3, 4)
    a[2][3][4:4] = needle
    a[5][0][:0] = needle          # at a row's start
    a[5][4] += needle             # at a row's end
    b[1][2][10:10] = needle
    c[3][1][0:0] = needle
    a[6][1] = a[6][1][:3] + needle[:2]  # a prefix at a row's end, then the rest opens the next row: not a hit
    a[6][2] = needle[2:] + a[6][2]
    write_order(tmp_path / "order" / "checkpoint_000001", a, rows_per_file=2, row_group_size=3)
    write_order(tmp_path / "order" / "checkpoint_000002", b, rows_per_file=3)
    write_order(tmp_path / "order" / "ext_000001", c)
    layout = [("checkpoint_000001", a), ("checkpoint_000002", b), ("ext_000001", c)]
    return tmp_path / "order", layout, needle


def test_where_finds_every_planted_row(planted, monkeypatch):
    root, layout, needle = planted
    monkeypatch.setattr(order, "READ_ROWS", 4)  # record batches that split steps: the row counter carries over
    hits = [(h["folder"], h["step"], h["row"]) for h in order.where(root, needle)]
    expected = _brute(layout, needle)
    assert hits == expected
    assert ("checkpoint_000001", 2, 3) in hits and ("checkpoint_000002", 1, 2) in hits and len(hits) == 5
    assert [h["folder"] for h in order.where(root, needle, phase="extension")] == ["ext_000001"]
    # any other sequence: the same as a scan (a random 2-gram of a row)
    probe = layout[1][1][3][4][7:9]
    assert [(h["folder"], h["step"], h["row"]) for h in order.where(root, probe)] == _brute(layout, probe)


def test_files_are_streamed(planted, monkeypatch):
    root, _, needle = planted
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("a whole file was read"))
    assert len(list(order.where(root, needle))) == 5


def test_command_line(planted, capsys):
    root, layout, needle = planted
    assert main(["data", "where", str(root / "checkpoint_000001"), "--ids", ",".join(map(str, needle))]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["step"], x["row"]) for x in lines] == [(2, 3), (5, 0), (5, 4)]
    assert set(lines[0]) == {"folder", "file", "step", "row"}
    assert main(["data", "where", str(root), "--ids", "1,x"]) == 2
    assert "comma-separated whole numbers" in capsys.readouterr().err


def test_text_through_a_tokenizer(tmp_path, shared_data, capsys):
    from ettin.data.tokenizer import load_tokenizer

    tok = shared_data / "modernbert_tokenizer"
    ids = load_tokenizer(tok).tokenizer.encode(" the white whale", add_special_tokens=False).ids
    steps = {1: [[50281, 5, 6, *ids, 9, 50282], [50281, 8, 50282]], 2: [[50281, *ids[1:], 50282], [50281, *ids]]}
    write_order(tmp_path / "decay_000001", steps)
    assert main(["data", "where", str(tmp_path / "decay_000001"), "--text", " the white whale",
                 "--tokenizer", str(tok)]) == 0
    assert [(json.loads(x)["step"], json.loads(x)["row"]) for x in capsys.readouterr().out.splitlines()] == \
        [(1, 0), (2, 1)]


def test_bad_files_are_named(tmp_path):
    import pyarrow as pa

    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    pq.write_table(pa.table({"tokens": [[1, 2]], "step": [1]}), folder / "steps_000001_to_000001.parquet")
    with pytest.raises(UserError, match="steps_000001_to_000001.parquet: no column input_ids"):
        list(order.where(tmp_path, [1]))
    with pytest.raises(UserError, match="no such order folder"):
        list(order.where(tmp_path / "missing", [1]))


def test_replay_serves_the_recorded_rows(tmp_path):
    special = SpecialTokens(cls_id=1, sep_id=2, pad_id=0, mask_id=3, num_tokens=96)
    rng = np.random.default_rng(1)
    steps = {s: [[1, *rng.integers(4, 96, 9).tolist(), 2] + [0] * 3 for _ in range(4)] for s in range(1, 6)}
    write_order(tmp_path / "o" / "decay_000001", {s: steps[s] for s in (1, 2, 3)})
    write_order(tmp_path / "o" / "decay_000002", {1: steps[4], 2: steps[5]}, rows_per_file=1)

    class Phase:  # what open_order reads of a recipe phase
        name, mixture, seq_len, mlm_probability = "decay", "replay", 16, 0.15

    src = order.open_order({"order": str(tmp_path / "o"), "phase": "decay"}, str(tmp_path / "r.yaml"), Phase(),
                           "clm", special, 0, 4, 0, 1)
    assert len(src.steps) == 5
    for k in range(5):  # ettin step k = the k-th recorded step, over the two folders
        batch, real = src.step_item(k)
        want = np.array([r[:11] for r in steps[k + 1]])
        assert (batch["input_ids"][:, :11].numpy() == want).all() and real == 4 * 11
        assert (batch["attention_mask"].sum(1) == 11).all()
    two = order.open_order({"order": str(tmp_path / "o" / "decay_000001")}, "r.yaml", Phase(), "mlm", special, 0,
                           4, 1, 2)
    b = two.batch(0)
    assert b["input_ids"].shape == (2, 16) and (b["labels"] != -100).any()
    with pytest.raises(UserError, match="the recipe's batch is 8"):
        order.open_order({"order": str(tmp_path / "o")}, "r.yaml", Phase(), "clm", special, 0, 8, 0, 1).rows(0)
    with pytest.raises(UserError, match="has 5 steps"):
        src.rows(5)


def test_a_prepared_recipe_replaying_an_order_passes_its_input_check(tmp_path, shared_data):
    from ettin.train.preflight import check_inputs
    from ettin.train.recipe import RecipeError, load_recipe

    write_order(tmp_path / "o" / "decay_000001", {1: [[50281, 7, 50282]] * 4})
    text = f"""
name: replay
model: {{size: tiny}}
data:
  tokenizer: {shared_data / "modernbert_tokenizer"}
  holdout_fraction: 0.02
  mixtures: {{replay: {{order: ORDER, phase: decay}}}}
train: {{global_batch_size: 4, micro_batch_size: 4}}
phases:
  - {{name: decay, tokens: 1000, seq_len: 32, mixture: replay}}
"""
    (tmp_path / "r.yaml").write_text(text.replace("ORDER", str(tmp_path / "o")))
    found = check_inputs(load_recipe(tmp_path / "r.yaml"))
    assert any("the published order in" in f and "decay_000001" in f for f in found)
    (tmp_path / "bad.yaml").write_text(text.replace("ORDER", str(tmp_path / "missing")))
    with pytest.raises(RecipeError, match="no such order folder"):
        check_inputs(load_recipe(tmp_path / "bad.yaml"))
    from ettin.train.heldout import held_out_rows

    recipe = load_recipe(tmp_path / "r.yaml")
    assert held_out_rows(recipe, recipe.phases[0]).rows == []  # a replayed order holds nothing out
