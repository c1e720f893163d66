"""What a first day's mistakes are told (issue 31, item 6): the error names what the user typed, not the recipe file
or an internal key, and exits non-zero without a traceback."""

import pytest

from downstream_tiny import beir_subset, build
from ettin.cli import main


def _error(capsys, argv) -> str:
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_bad_value_on_the_command_line_is_the_command_lines(capsys, tmp_path):
    err = _error(capsys, ["train", "recipes/tiny.yaml", "--dry-run", "--out", str(tmp_path / "x"), "train.lr=abc"])
    assert "the command line (train.lr=abc, on recipes/tiny.yaml): train.lr: expected a number, got 'abc'" in err
    assert "recipes/tiny.yaml: train.lr" not in err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    """A tiny random encoder with a tokenizer (a checkpoint and its Hugging Face folder)."""
    root = tmp_path_factory.mktemp("errors")
    return build(root / "models", beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran",
                                              queries=4, docs=50))


def test_continue_names_its_data_flag_not_the_recipe_key(capsys, tmp_path, tiny):
    err = _error(capsys, ["continue", str(tiny.hf["mlm"]), "--data", "notez.jsonl", "--tokens", "1k", "--out",
                          str(tmp_path / "c"), "--dry-run", "--lr", "1e-3"])
    assert "--data: notez.jsonl: no such file" in err and "data.prepare.sources" not in err


def test_a_typo_in_a_task_path_names_the_path(capsys, tmp_path, tiny):
    err = _error(capsys, ["eval", str(tiny.hf["mlm"]), "--tasks", "beir:../mydata/cisii", "--out", str(tmp_path / "e")])
    assert "../mydata/cisii: no such folder" in err and "--data-dir" not in err
