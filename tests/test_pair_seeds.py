"""Pre-training seeds as an axis: `ettin pair --seeds K` trains K pairs into OUT/seed-<s>/{encoder,decoder}; within a
pair the two share initialisation and batch order (fingerprints compared), pairs differ in both; resumable and
--parallel like one pair. The job runner that lays the runs over the cores."""

import json
import sys

import pytest
import torch

from ettin.cli import main
from ettin.jobs import Job, run_jobs
from ettin.train.checkpoint import latest_checkpoint

RECIPE = """
name: s
seed: 5
model: {size: tiny}
data: {source: synthetic, vocab_size: 96}
train: {lr: 3e-3, global_batch_size: 4, micro_batch_size: 4, progress: false, tensorboard: false, cpu_threads: 1}
phases:
  - {name: pretrain, tokens: 256, seq_len: 32}
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(RECIPE)
    return path


def _weights(run):
    from ettin.train.checkpoint import load_model

    return load_model(latest_checkpoint(run)).state_dict()


def _fingerprints(run):
    return json.loads((run / "fingerprints.json").read_text())


def test_seeds_train_k_pairs_that_differ_between_and_agree_within(recipe_file, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["pair", str(recipe_file), "--seeds", "2", "--out", str(out)]) == 0
    assert json.loads((out / "seeds.json").read_text())["seeds"] == [5, 6]
    for s in (5, 6):
        pair = json.loads((out / f"seed-{s}" / "pair.json").read_text())
        assert pair["same_batch_order"] is True  # encoder and decoder of one seed: one batch order
        for sub in ("encoder", "decoder"):
            assert latest_checkpoint(out / f"seed-{s}" / sub) is not None
            assert json.loads((latest_checkpoint(out / f"seed-{s}" / sub) / "meta.json").read_text())[
                "data_position"]["seed"] == s
    # the seeds differ in data order
    assert _fingerprints(out / "seed-5" / "encoder") != _fingerprints(out / "seed-6" / "encoder")
    # a second call resumes: nothing left to train
    capsys.readouterr()
    assert main(["pair", str(recipe_file), "--seeds", "2", "--out", str(out), "--resume-if-exists"]) == 0
    assert capsys.readouterr().out.count("nothing to train") == 4


def test_one_seed_keeps_the_plain_layout(recipe_file, tmp_path):
    out = tmp_path / "one"
    assert main(["pair", str(recipe_file), "--out", str(out)]) == 0
    assert (out / "encoder").is_dir() and (out / "decoder").is_dir() and not (out / "seed-5").exists()
    assert not (out / "seeds.json").exists()


def test_seeds_as_a_recipe_key_and_refused_by_train(recipe_file, tmp_path, capsys):
    assert main(["pair", str(recipe_file), "seeds=2", "--plan"]) == 0
    assert main(["train", str(recipe_file), "seeds=2", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "seeds: 2" in err and "ettin pair" in err and "seed=N" in err
    assert main(["pair", str(recipe_file), "--seeds", "0", "--out", str(tmp_path / "z")]) == 2
    assert "--seeds must be at least 1" in capsys.readouterr().err


def test_parallel_seeds_match_the_serial_runs(recipe_file, tmp_path):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    assert main(["pair", str(recipe_file), "--seeds", "2", "--out", str(serial)]) == 0
    assert main(["pair", str(recipe_file), "--seeds", "2", "--parallel", "--jobs", "2", "--out", str(parallel)]) == 0
    for s in (5, 6):
        for sub in ("encoder", "decoder"):
            a, b = _weights(serial / f"seed-{s}" / sub), _weights(parallel / f"seed-{s}" / sub)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (s, sub)


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_jobs_wait_for_their_prerequisites_and_respect_the_lanes(tmp_path):
    order = tmp_path / "order.txt"
    write = "import sys, time; open(sys.argv[1], 'a').write(sys.argv[2] + ' start\\n'); time.sleep(0.3); " \
            "open(sys.argv[1], 'a').write(sys.argv[2] + ' end\\n')"
    jobs = [Job("a", [*_py(write), str(order), "a"], tmp_path / "a.log"),
            Job("b", [*_py(write), str(order), "b"], tmp_path / "b.log", after=("a",)),
            Job("c", [*_py(write), str(order), "c"], tmp_path / "c.log")]
    assert run_jobs(jobs, lanes=2, poll_s=0.05, echo=lambda s: None) == []
    lines = order.read_text().splitlines()
    assert lines.index("b start") > lines.index("a end")  # b waited for a
    assert lines.index("c start") < lines.index("a end")  # c ran beside a: two lanes
    running, most = 0, 0
    for ln in lines:
        running += 1 if ln.endswith("start") else -1
        most = max(most, running)
    assert most == 2


def test_a_failed_job_starts_nothing_more_and_is_returned(tmp_path):
    jobs = [Job("bad", _py("import sys; print('boom'); sys.exit(3)"), tmp_path / "bad.log"),
            Job("next", _py("open('never', 'w')"), tmp_path / "next.log", after=("bad",))]
    failed = run_jobs(jobs, lanes=1, poll_s=0.05, echo=lambda s: None)
    assert [j.name for j in failed] == ["bad"] and "boom" in (tmp_path / "bad.log").read_text()
    assert not (tmp_path / "next.log").exists()
    with pytest.raises(ValueError, match="unknown jobs"):
        run_jobs([Job("x", _py(""), tmp_path / "x.log", after=("y",))], lanes=1)
