"""The README's snippets run as written.

Every fenced ```python and ```bash block of README.md runs, in the order written, in a scratch folder laid
out like a checkout (recipes/ beside it, ../shared/data above it), with `ettin` and `python` from this
environment on the PATH. A block preceded by `<!-- not run: REASON -->` is skipped (the two `make`
commands, which would call this suite, and GPU-only commands); every skip names its reason, and the test
fails when a block is skipped without one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BLOCK = re.compile(r"(?:<!--\s*not run:\s*(?P<why>[^>]*?)\s*-->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)


def blocks(text: str) -> list[tuple[str, str, str | None, int]]:
    """(language, body, skip reason or None, line number) for every fenced block."""
    out = []
    for m in BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("body"))
        out.append((m["lang"], m["body"], m["why"], line))
    return out


def test_blocks_are_found_and_skips_give_reasons():
    found = blocks((REPO / "README.md").read_text())
    langs = [lang for lang, *_ in found]
    assert "python" in langs and "bash" in langs
    for lang, _body, why, line in found:
        if why is not None:
            assert why.strip(), f"README.md:{line}: a skipped block must say why"
        assert lang in ("python", "bash", ""), f"README.md:{line}: unknown block language {lang!r}"


def _scratch(tmp_path: Path, shared_data: Path) -> Path:
    """A checkout-shaped folder: work/recipes -> the repo's recipes, shared/data -> the shared data."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data.resolve())
    work = tmp_path / "work"
    work.mkdir()
    for name in ("recipes", "scripts"):
        (work / name).symlink_to(REPO / name)
    return work


@pytest.mark.slow
def test_readme_runs_as_written(tmp_path, shared_data):
    work = _scratch(tmp_path, shared_data)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", MPLBACKEND="Agg",
               HF_HOME=str(tmp_path / "hf"))
    ran = 0
    for lang, body, why, line in blocks((REPO / "README.md").read_text()):
        if why is not None or lang not in ("python", "bash"):
            continue
        cmd = ["bash", "-euo", "pipefail", "-c", body] if lang == "bash" else [sys.executable, "-c", body]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (
            f"README.md:{line}: the {lang} block failed (exit {proc.returncode})\n{body}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
        ran += 1
    assert ran >= 3


def test_real_sizes_micro_batches_are_the_recipes():
    """docs/real-sizes.md's micro-batch column is each preset recipe's, phase by phase (it once said 72 / 9 for the
    150m where the recipe runs 72, 16 and 12)."""
    import re

    from ettin.train.recipe import load_recipe

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "real-sizes.md").read_text()
    for size in ("17m", "32m", "68m", "150m", "400m", "1b"):
        row = re.search(rf"^\| {size} \|.*\| (\d+) / (\d+) / (\d+) \|", text, re.M)
        assert row, size
        recipe = load_recipe(root / "recipes" / f"{size}.yaml")
        phases = [p.micro_batch_size or recipe.train.micro_batch_size for p in recipe.phases]
        assert [int(x) for x in row.groups()] == phases, size
