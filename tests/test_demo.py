"""`ettin demo`: argument checks and token scaling (fast); the whole quick run end to end (slow)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ettin import demo
from ettin.cli import main as ettin_main

REPO = Path(__file__).resolve().parents[1]


def test_minutes_scale_every_phase_and_are_checked(capsys):
    over = demo._scaled(str(REPO / "recipes" / "demo.yaml"), 2.0, [])
    base = demo._load(str(REPO / "recipes" / "demo.yaml"), [])
    scaled = demo._load(str(REPO / "recipes" / "demo.yaml"), over)
    assert [p.tokens for p in scaled.phases] == [2 * p.tokens for p in base.phases]
    assert scaled.phases[0].warmup_tokens == 2 * base.phases[0].warmup_tokens
    assert demo._scaled(str(REPO / "recipes" / "demo.yaml"), 1.0, []) == []
    assert ettin_main(["demo", "--minutes", "3", "--out", "unused"]) == 2
    assert "--minutes must exceed" in capsys.readouterr().err


def test_every_role_is_a_claim_role():
    from ettin.eval.compare import CLAIMS

    roles = {r for c in CLAIMS for comp in c.comparisons for r in (comp.favoured, comp.other)}
    assert roles == {"encoder", "decoder", *demo.CONTINUED}


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    """Every step of the demo on the tiny recipe: seven models, their results, a report with five claims."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "ettin.cli", "demo", "--quick", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report" / "report.json").read_text())
    assert [c["id"] for c in report["findings"]["claims"]] == [1, 2, 3, 4, 5]
    assert set(report["results"]) == {"encoder", "decoder", *demo.CONTINUED}
    md = (out / "report" / "report.md").read_text()
    assert md.index("## Findings") < md.index("| # | claim |") < md.index("**Rule.**")
    # a second run resumes: training is complete, every task is cached, the same findings come out
    again = subprocess.run([sys.executable, "-m", "ettin.cli", "demo", "--quick", "--out", str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    logs = "".join(p.read_text() for p in (out / "eval").rglob("*.log"))
    assert ": cached" in logs and not re.search(r": \S+ = ", logs)  # nothing recomputed
    assert json.loads((out / "report" / "report.json").read_text())["findings"] == report["findings"]
