"""`ettin continue`: continued pre-training of a checkpoint on a user's own JSONL, end to end on a tiny random model
(offline): the model's tokenizer and objective, one phase through the `ettin train` loop, held-out likelihood
before and after, resume, a transformers export; `--plan` is the plan of the recipe it writes; hub ids with
--revision (the hub call stubbed); and a starting point whose tokenizer is not the data's is refused."""

import contextlib
import io
import json

import pytest

from downstream_tiny import beir_subset, build
from ettin.cli import main
from ettin.data.tokenizer import encoding_sha256
from ettin.train import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["--tokens", "24k", "--seq-len", "128", "--batch-size", "8", "train.progress=false", "train.tensorboard=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    """Tiny random encoder/decoder (checkpoints and Hugging Face folders) and a user's JSONL (field `body`)."""
    root = tmp_path_factory.mktemp("continue")
    env = build(root / "models", beir_subset(shared_data / "retrieval" / "cranfield" / "beir", root / "cran",
                                             queries=4, docs=200))
    notes = root / "notes.jsonl"
    with open(shared_data / "pretrain" / "wikipedia_vital_summaries_en.jsonl", encoding="utf-8") as src, \
            open(notes, "w", encoding="utf-8") as f:
        for _, line in zip(range(120), src):
            f.write(json.dumps({"id": len(line), "body": json.loads(line)["text"]}) + "\n")
    env.notes = notes
    return env


@pytest.fixture(scope="module")
def continued(tiny, tmp_path_factory):
    """`ettin continue` on the encoder's Hugging Face folder, run once; (out folder, stdout)."""
    out = tmp_path_factory.mktemp("run") / "notes"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["continue", str(tiny.hf["mlm"]), "--data", str(tiny.notes), "--field", "body",
                     "--out", str(out), *FAST])
    assert code == 0, buf.getvalue()
    return out, buf.getvalue()


def test_continue_trains_on_the_users_file_and_reports_held_out_likelihood(tiny, continued):
    out, printed = continued
    record = json.loads((out / "continued.json").read_text())
    before, after = record["before"], record["after"]
    # the held-out documents: the last 5% of the file's 120 (6), never trained on, scored under mlm before and after
    assert record["held_out"]["documents"] == {"notes": 6} and record["held_out"]["documents_available"] == 6
    assert record["objective"] == "mlm" and after["predicted"] == before["predicted"] > 50
    assert after["loss"] < before["loss"] - 0.1, record  # a random model learns the user's text
    line = next(x for x in printed.splitlines() if x.startswith("held-out log-likelihood"))
    assert f"{-before['loss']:.4f} -> {-after['loss']:.4f}" in line and "6 documents" in line
    # one phase through the training loop, with the model's tokenizer; the export loads in transformers
    recipe = (out / "recipe.yaml").read_text()
    assert "init_from: " + str(tiny.hf["mlm"]) in recipe and "schedule: warmup_stable_decay" in recipe
    assert encoding_sha256(out / "tokenizer.json") == encoding_sha256(tiny.hf["mlm"] / "tokenizer.json")
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    hf = AutoModelForMaskedLM.from_pretrained(out / "final")
    ids = AutoTokenizer.from_pretrained(out / "final")("a ship at sea", return_tensors="pt")
    assert hf(**ids).logits.shape[-1] == hf.config.vocab_size
    # where the weights came from: the history, every checkpoint's meta and the export's marker
    start = json.loads((out / "history.jsonl").read_text().splitlines()[0])
    assert start["init_from"]["path"] == str(tiny.hf["mlm"].resolve()) and start["init_from"]["kind"] == "hf"
    assert start["from_checkpoint"] == str(tiny.hf["mlm"].resolve())
    for c in ckpt.list_checkpoints(out):
        assert ckpt.read_meta(c)["init_from"]["path"] == str(tiny.hf["mlm"].resolve())
    marker = json.loads((out / "final" / "ettin_checkpoint.json").read_text())
    assert marker["init_from"]["path"] == str(tiny.hf["mlm"].resolve())


def test_continue_resumes_and_refuses_to_overwrite(tiny, continued, capsys):
    out, _ = continued
    argv = ["continue", str(tiny.hf["mlm"]), "--data", str(tiny.notes), "--field", "body", "--out", str(out), *FAST]
    assert main(argv) == 2
    assert "already holds checkpoints: pass --resume" in capsys.readouterr().err
    after = json.loads((out / "continued.json").read_text())["after"]
    assert main([*argv, "--resume"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert json.loads((out / "continued.json").read_text())["after"] == after  # the same final model, scored again


def test_plan_is_the_plan_of_the_recipe_it_runs(tiny, continued, capsys):
    out, _ = continued
    argv = ["continue", str(tiny.hf["mlm"]), "--data", str(tiny.notes), "--field", "body", "--out", str(out), *FAST]
    assert main([*argv, "--plan"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert main(["train", str(out / "recipe.yaml"), "--plan"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in plan.items() if k != "source"} == {k: v for k, v in again.items() if k != "source"}
    p = plan["phases"][0]  # the schedule's defaults: the cross-objective phase's shape at half the tiny peak
    assert (p["schedule"], p["warmup_tokens"], p["decay_tokens"], p["decay_shape"]) == (
        "warmup_stable_decay", 1440, 4800, "linear")
    assert plan["optimizer"]["lr"] == pytest.approx(1.5e-3) and p["lr_end"] == pytest.approx(0.02 * 1.5e-3)
    assert p["mlm_probability"] == 0.15 and p["tokens"] == 24_000 and p["seq_len"] == 128


def test_objectives_decoder_and_mntp(tiny, tmp_path, capsys):
    base = ["--data", str(tiny.notes), "--field", "body", "--out", str(tmp_path / "x"), *FAST, "--plan"]
    assert main(["continue", str(tiny.runs["clm"]), *base]) == 0  # a run folder: its newest checkpoint
    plan = json.loads(capsys.readouterr().out)
    assert plan["objective"] == "clm" and not plan["mntp"] and plan["phases"][0]["mlm_probability"] == 0.0
    assert plan["model"]["init_from"] == str(tiny.ckpt["clm"])
    assert main(["continue", str(tiny.hf["clm"]), *base, "--mntp"]) == 0  # a decoder continued as an MNTP encoder
    plan = json.loads(capsys.readouterr().out)
    assert plan["objective"] == "mlm" and plan["mntp"] and plan["phases"][0]["mlm_probability"] == 0.15


def test_a_short_decoder_run_scores_next_tokens(tiny, tmp_path, capsys):
    out = tmp_path / "dec"
    assert main(["continue", str(tiny.ckpt["clm"]), "--data", str(tiny.notes), "--field", "body", "--out", str(out),
                 *FAST, "--tokens", "8k"]) == 0
    record = json.loads((out / "continued.json").read_text())
    assert record["objective"] == "clm" and record["after"]["loss"] < record["before"]["loss"]
    # clm predicts every token after [CLS], and [SEP] after each document's last token: tokens + documents
    held = record["held_out"]
    assert record["after"]["predicted"] == held["tokens"] + sum(held["documents"].values())


def test_hub_id_with_revision(tiny, tmp_path, monkeypatch, capsys):
    calls = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision))
        return str(tiny.hf["mlm"])

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    assert main(["continue", "some-org/some-encoder", "--revision", "step1000", "--data", str(tiny.notes),
                 "--field", "body", "--out", "runs/hub", *FAST, "--plan"]) == 0
    assert calls == [("some-org/some-encoder", "step1000")]
    assert json.loads(capsys.readouterr().out)["model"]["init_from"] == str(tiny.hf["mlm"])
    assert main(["continue", str(tiny.hf["mlm"]), "--revision", "main", "--data", str(tiny.notes), "--out", "x",
                 *FAST, "--plan"]) == 2
    assert "for hub ids only" in capsys.readouterr().err


def test_missing_model_is_no_such_folder_not_a_hub_id(tiny, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("asked the hub"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert main(["continue", "runs/does-not-exist", "--data", str(tiny.notes), "--out", "x", *FAST]) == 2
    assert "runs/does-not-exist: no such folder" in capsys.readouterr().err


def test_bad_files_stop_before_work_naming_file_line_and_field(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "fine"}\n{"text": "no body"}\n')
    for data, expected in ((tmp_path / "none.jsonl", "none.jsonl: no such file"),
                           (bad, "bad.jsonl:2: missing field 'body'")):
        out = tmp_path / "out"
        assert main(["continue", str(tiny.hf["mlm"]), "--data", str(data), "--field", "body", "--out", str(out),
                     *FAST]) == 2
        assert expected in capsys.readouterr().err
        assert not out.exists()  # nothing half-written


def test_init_from_with_another_tokenizer_is_refused(tiny, tmp_path, capsys):
    """A model trained with tokenizer A continued on data tokenized by B (the same vocabulary size): refused,
    naming both, before any work; with A it passes."""
    from downstream_tiny import tokenizer as bpe
    from ettin.data.tokenizer import load_tokenizer
    from ettin.train.preflight import check_inputs
    from ettin.train.recipe import RecipeError, load_recipe

    other = bpe([json.loads(x)["body"][::-1] for x in tiny.notes.read_text().splitlines()])  # reversed text: new merges
    other.save(str(tmp_path / "b.json"))
    a, b = load_tokenizer(tiny.hf["mlm"]), load_tokenizer(tmp_path / "b.json")
    assert a.vocab_size == b.vocab_size and encoding_sha256(a.tokenizer) != encoding_sha256(b.tokenizer)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: r
model: {{size: tiny, init_from: {tiny.hf['mlm']}}}
data:
  tokenizer: TOKENIZER
  vocab_size: {a.vocab_size}
  prepare: {{out: {tmp_path / 'shards'}, sources: ["{tiny.notes}:body"]}}
  mixtures: {{m: {{name: m, sources: [{{name: notes, path: {tmp_path / 'shards'}, subset: notes, weight: 1}}]}}}}
phases: [{{name: p, tokens: 1k, seq_len: 64, mixture: m}}]
""")
    with pytest.raises(RecipeError) as e:
        check_inputs(load_recipe(recipe, [f"data.tokenizer={tmp_path / 'b.json'}"]))
    message = str(e.value)
    assert str(tiny.hf["mlm"] / "tokenizer.json") in message and str(tmp_path / "b.json") in message
    assert "a different tokenizer" in message and f"both have {a.vocab_size:,} ids" in message
    assert main(["train", str(recipe), f"data.tokenizer={tmp_path / 'b.json'}", "--dry-run"]) == 2
    capsys.readouterr()
    found = check_inputs(load_recipe(recipe, [f"data.tokenizer={tiny.runs['mlm'] / 'tokenizer.json'}"]))
    assert any("its tokenizer" in line for line in found)  # the run's file and the export's: one tokenizer


def test_shards_made_with_another_tokenizer_are_refused(tiny, tmp_path):
    from downstream_tiny import tokenizer as bpe
    from ettin.data.prepare import PrepareConfig, prepare
    from ettin.train.preflight import check_inputs
    from ettin.train.recipe import RecipeError, load_recipe

    bpe([json.loads(x)["body"][::-1] for x in tiny.notes.read_text().splitlines()]).save(str(tmp_path / "b.json"))
    prepare([f"{tiny.notes}:body"], str(tmp_path / "b.json"), PrepareConfig(out=tmp_path / "shards", workers=0))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: r
model: {{size: tiny}}
data:
  tokenizer: {tiny.runs['mlm'] / 'tokenizer.json'}
  mixtures: {{m: {{name: m, sources: [{{name: notes, path: {tmp_path / 'shards'}, subset: notes, weight: 1}}]}}}}
phases: [{{name: p, tokens: 1k, seq_len: 64, mixture: m}}]
""")
    with pytest.raises(RecipeError, match="tokenized with .*b.json.*not with data.tokenizer"):
        check_inputs(load_recipe(recipe))


def test_one_token_count_everywhere(continued):
    """The progress lines, metrics.jsonl and the phase's closing line count the same real tokens (they once showed
    slots in one place and real tokens in another)."""
    import re

    from ettin.train.progress import _human, read_metrics

    out, printed = continued
    rows = {r["step"]: r for r in read_metrics(out / "metrics.jsonl")}
    lines = re.findall(r"^continue step (\d+) (\S+)/(\S+) real tokens tok (\S+) ", printed, re.M)
    assert len(lines) >= 2
    for step, phase_count, budget, run_count in lines:
        row = rows[int(step)]
        assert (phase_count, budget, run_count) == (_human(row["phase_tokens"]), _human(24_000), _human(row["tokens"]))
    last = rows[max(rows)]
    assert f"continue: {last['step']} steps, {last['phase_tokens']:,} real tokens, loss" in printed
    meta = ckpt.read_meta(ckpt.latest_checkpoint(out))
    assert meta["phase_tokens"] == meta["tokens"] == last["phase_tokens"] == last["tokens"]
    assert json.loads((out / "final" / "ettin_checkpoint.json").read_text())["tokens"] == last["tokens"]


def test_the_documented_recipe_form_trains_what_continue_trains(tiny, tmp_path, capsys):
    """docs/training.md's recipe for `ettin continue ... --tokens 20k` has the same schedule, batch, masking and
    data handling as the plan `ettin continue` makes (its model and paths are the quickstart's)."""
    import re

    import yaml

    from conftest import REPO
    from ettin.train.plan import make_plan
    from ettin.train.recipe import recipe_from_dict

    docs = (REPO / "docs" / "training.md").read_text().split("## Continued pre-training on your own text")[1]
    raw = yaml.safe_load(re.search(r"```yaml\n(.*?)```", docs, re.S).group(1))
    documented = make_plan(recipe_from_dict(raw, "docs/training.md")).to_json()
    assert main(["continue", str(tiny.hf["mlm"]), "--data", str(tiny.notes), "--field", "body", "--out",
                 str(tmp_path / "quick-notes"), "--tokens", "20k", "--seq-len", "256", "--plan"]) == 0
    made = json.loads(capsys.readouterr().out)
    same = ("schedule", "warmup_tokens", "decay_tokens", "decay_shape", "lr_start", "lr_end", "mlm_probability",
            "tokens", "seq_len", "global_batch", "micro_batch", "save_every_tokens")
    assert {k: documented["phases"][0][k] for k in same} == {k: made["phases"][0][k] for k in same}
    assert documented["optimizer"] == made["optimizer"]
    assert raw["data"]["holdout_fraction"] == 0.05 and raw["data"]["mixtures"]["continue"]["instances"] == {
        "mode": "pack"}


def test_installed_package_knows_the_published_peaks(tmp_path, monkeypatch, capsys):
    """Installed from a wheel there is no recipes/ folder: a 17m-shaped model still starts at half the published
    17m peak without --lr. The package's table of peaks is each size recipe's train.lr."""
    from conftest import REPO
    from downstream_tiny import tokenizer as bpe
    from ettin.config import SIZES, preset
    from ettin.hf import config_to_hf
    from ettin.train import continued
    from ettin.train.recipe import load_recipe

    monkeypatch.setattr(continued, "RECIPES", tmp_path / "no-recipes", raising=False)  # as installed
    model = tmp_path / "ettin-encoder-17m"
    model.mkdir()
    texts = [f"the ship {i} sailed across the sea at dawn" for i in range(50)]
    bpe(texts).save(str(model / "tokenizer.json"))
    (model / "config.json").write_text(json.dumps(config_to_hf(preset("17m"))))
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert main(["continue", str(model), "--data", str(notes), "--tokens", "10k", "--out", str(tmp_path / "out"),
                 "--plan"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["optimizer"]["lr"] == pytest.approx(0.5 * 3e-3)
    recipes = {s: REPO / "recipes" / f"{s}.yaml" for s in SIZES}
    assert continued.PEAK_LR == {s: load_recipe(path).train.lr for s, path in recipes.items() if path.is_file()}
