"""cls:FOLDER in GLUE's own layout (train.tsv and dev.tsv) and the README's list of every cls: setting (issue 31
item 2)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from ettin.cli import main as ettin_main
from ettin.eval import runner
from ettin.eval.tasks.classification import ClassificationSettings
from ettin.eval.tasks.common import FinetuneSettings
from test_eval_tasks import _sentence, env  # noqa: F401 (env: the tiny models' fixture)

REPO = Path(__file__).resolve().parents[1]


def test_every_cls_setting_is_in_the_readme():
    text = (REPO / "README.md").read_text()
    section = text[text.index("**Your own data**"):text.index("## What is inside")]
    names = [f.name for f in dataclasses.fields(ClassificationSettings) if f.name != "finetune"]
    names += [f"finetune.{f.name}" for f in dataclasses.fields(FinetuneSettings)]
    missing = [n for n in names if f"`{n}`" not in section]
    assert not missing, f"README's cls: section does not name {missing}"


def test_a_glue_layout_folder_uses_dev_as_the_test_split(env, tmp_path, capsys):  # noqa: F811
    rng = random.Random(3)
    folder = tmp_path / "MRPC"
    folder.mkdir()
    for split, n in (("train", 30), ("dev", 10)):
        rows = [[str(rng.choice([0, 1])), str(i), str(i + 1), _sentence(rng), _sentence(rng)] for i in range(n)]
        (folder / f"{split}.tsv").write_text("".join("\t".join(r) + "\n" for r in
                                                     [["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], *rows]))
    task = f"cls:{folder}"
    argv = ["eval", str(env.folders["mlm"]), "--tasks", task, "--out", str(tmp_path / "out"), "--data-dir",
            str(env.data), "--set", f"{task}.text=#1 String", "--set", f"{task}.text_pair=#2 String", "--set",
            f"{task}.label=Quality", "--set", f"{task}.designs=probe"]
    assert ettin_main(argv) == 0
    err = capsys.readouterr().err
    assert err.count(f"{task}: no test.* file; using dev.tsv as the test split") == 1, err
    res = runner.load_results(tmp_path / "out")[0]["tasks"][task]
    assert res["n"] == 10 and res["n_train"] + res["n_validation"] == 30
