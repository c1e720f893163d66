"""`ettin eval HUB_ID --revisions PATTERN` (ettin.eval.revisions): a hub model's published revisions evaluated
one by one (cached per revision), training tokens estimated from the names, and the report's learning curves
with the encoder and the decoder side by side. The hub is replaced by local folders: huggingface_hub's
list_repo_refs and snapshot_download are monkeypatched, the rest is the real code path."""

import json
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch

from downstream_tiny import beir_subset, build
from ettin.cli import main as ettin_main
from ettin.eval import report, revisions
from ettin.hf import from_pretrained, save_pretrained

REFS = ("step100", "step200", "ext10", "decay50", "main", "stepX")


@pytest.fixture(scope="module")
def hub(tmp_path_factory, shared_data):
    """Two fake hub repositories, org/enc and org/dec, each with revisions of different weights."""
    root = tmp_path_factory.mktemp("revisions")
    beir = beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran", queries=4, docs=60)
    env = build(root / "models", beir)
    folders = {}
    for repo, objective in (("org/enc", "mlm"), ("org/dec", "clm")):
        for i, ref in enumerate(REFS):
            model = from_pretrained(env.hf[objective])
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.02 * i * torch.randn_like(p))
            folders[repo, ref] = save_pretrained(model, root / "hub" / repo.replace("/", "--") / ref, tokenizer=env.tok)
    return SimpleNamespace(folders=folders, data=shared_data, root=root)


@pytest.fixture
def fake_hub(hub, monkeypatch):
    calls = []

    def list_repo_refs(repo_id, **kwargs):
        if not any(r == repo_id for r, _ in hub.folders):
            raise RuntimeError(f"404 {repo_id}")
        refs = [SimpleNamespace(name=ref, ref=f"refs/heads/{ref}", target_commit=f"{i:040d}")
                for i, ref in enumerate(REFS)]
        return SimpleNamespace(branches=refs, tags=[], converts=[])

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision))
        return str(hub.folders[repo_id, revision])

    monkeypatch.setattr(huggingface_hub, "list_repo_refs", list_repo_refs)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_tokens_are_estimated_from_the_names_in_training_order(fake_hub):
    revs = revisions.list_revisions("org/enc")
    assert [r.name for r in revs] == ["step100", "step200", "ext10", "decay50"]  # main / stepX are not checkpoints
    tokens = {r.name: r.tokens for r in revs}
    assert tokens == {"step100": 850_000_000_000, "step200": 1_700_000_000_000, "ext10": 1_950_000_000_000,
                      "decay50": 2_000_000_000_000}
    assert [r.name for r in revisions.select(revs, "step*,decay*")] == ["step100", "step200", "decay50"]
    assert [r.name for r in revisions.select(revs, "all", every=2)] == ["step100", "ext10", "decay50"]
    with pytest.raises(ValueError, match="matches none"):
        revisions.select(revs, "final*")


def test_revisions_evaluated_cached_and_drawn_side_by_side(hub, fake_hub, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["eval", "org/enc", "org/dec", "--revisions", "step*,decay*", "--tasks", "piqa", "--limit", "8",
            "--out", str(out), "--data-dir", str(hub.data), "--device", "cpu", "--threads", "1"]
    assert ettin_main(argv) == 0
    assert sorted(fake_hub) == sorted((r, v) for r in ("org/enc", "org/dec") for v in ("step100", "step200", "decay50"))
    files = {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))}
    assert sorted(files) == [f"org--{m}/{r}.json" for m in ("dec", "enc") for r in ("decay50", "step100", "step200")]
    model = files["org--enc/step200.json"]["model"]
    assert (model["revision"], model["commit"], model["phase"], model["step"], model["tokens"]) == \
        ("step200", f"{1:040d}", "pretrain", 200, 1_700_000_000_000)
    assert model["tokens_estimated"] and model["role"] == "encoder"
    assert files["org--dec/decay50.json"]["model"]["role"] == "decoder"
    assert len({v["model"]["sha256"] for v in files.values()}) == 6  # each revision's own files
    capsys.readouterr()

    assert ettin_main(argv) == 0  # again: every revision's tasks are cached
    err = capsys.readouterr().err
    assert err.count("piqa: cached") == 6
    assert {p.relative_to(out).as_posix(): json.loads(p.read_text()) for p in sorted(out.rglob("*.json"))} == files

    assert ettin_main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [r["model"]["revision"] for r in data["results"]["encoder"]] == ["step100", "step200", "decay50"]
    panels = report._learning_panels(data["results"])
    piqa = next(p for p in panels if p["title"] == "piqa")
    assert sorted(piqa["series"]) == ["decoder", "encoder"]
    for role, res in (("encoder", "enc"), ("decoder", "dec")):
        [(xs, ys)] = piqa["series"][role]  # one lineage: one line
        assert xs == [850_000_000_000, 1_700_000_000_000, 2_000_000_000_000]
        assert ys == [files[f"org--{res}/{r}.json"]["tasks"]["piqa"]["acc_norm"] for r in ("step100", "step200", "decay50")]
    assert (tmp_path / "report" / "learning-curves.png").stat().st_size > 0
    curve = next(c for c in data["curves"] if c["label"] == "piqa")  # claim 3 over the published revisions
    assert [p["tokens"] for p in curve["points"]] == [850_000_000_000, 1_700_000_000_000, 2_000_000_000_000]
    assert (tmp_path / "report" / "claim-3-over-tokens.png").stat().st_size > 0
    assert "estimated from their step numbers" in (tmp_path / "report" / "report.md").read_text()


def test_bad_revision_arguments_are_clear_errors(hub, fake_hub, tmp_path, capsys):
    common = ["--tasks", "piqa", "--out", str(tmp_path / "eval"), "--data-dir", str(hub.data)]
    cases = [(["eval", str(hub.folders["org/enc", "main"]), "--revisions", "all"], "not a hub id"),
             (["eval", "org/enc", "--revisions", "final*"], "matches none"),
             (["eval", "org/none", "--revisions", "all"], "could not be listed")]
    for argv, named in cases:
        assert ettin_main(argv + common) == 2
        assert named in capsys.readouterr().err
    assert not fake_hub and not (tmp_path / "eval").exists()
