"""`ettin import-composer`: a published-format Composer checkpoint into an ettin run folder: the weights exactly
(logits against the same weights in transformers' ModernBERT classes), the optimizer state, the position."""

import json

import pytest
import torch

from ettin.cli import main
from ettin.io import UserError
from ettin.train import checkpoint as ckpt
from ettin.train.composer import NOT_CARRIED, import_composer
from ettin.train.optim import build_optimizer
from ettin.train.recipe import TrainSection
from published_fixtures import composer_checkpoint, hf_model

pytest.importorskip("transformers")


def _batch(vocab):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (3, 40), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    return ids, mask


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_import_is_exact_against_transformers(tmp_path, objective):
    # windows of 16 over 40 tokens: the local layers are exercised; local theta differs from global
    hf = hf_model(objective, window=16, theta=160000.0, local_theta=10000.0)
    path = composer_checkpoint(tmp_path / "ep0-ba120-rank0.pt", hf, objective, batch=120, tokens=61_234)
    written = import_composer(path, tmp_path / "run", phase="extension", log=lambda *_: None)
    assert written.name == "extension-step0000120"
    model = ckpt.load_model(written)
    assert model.config.objective == objective and model.config.local_attention == 16
    ids, mask = _batch(96)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], rtol=1e-5, atol=1e-5)


def test_optimizer_state_position_and_record(tmp_path):
    hf = hf_model("mlm")
    path = composer_checkpoint(tmp_path / "ep0-ba40-rank0.pt", hf, "mlm", batch=40, tokens=20_480, lr=1e-3,
                               max_lr=3e-3, weight_decay=3e-4)
    written = import_composer(path, tmp_path / "run", log=lambda *_: None)
    meta = ckpt.read_meta(written)
    assert (meta["phase"], meta["phase_index"], meta["step"], meta["phase_tokens"]) == ("pretrain", 0, 40, 20_480)
    assert meta["imported"]["not_carried"] == NOT_CARRIED and meta["imported"]["scheduler_last_lr"] == [1e-3, 1e-3]
    assert json.loads((tmp_path / "run" / "imported.json").read_text())["source"] == str(path)
    # what `ettin train --resume` loads: a model and ettin's optimizer, then the checkpoint into them
    model = ckpt.load_model(written).train()
    opt = build_optimizer(model, TrainSection(lr=3e-3, weight_decay=3e-4))
    ckpt.load_checkpoint(written, model, opt)
    raw = torch.load(path, weights_only=False)["state"]["optimizers"]["StableAdamW"]
    names = {p: n for n, p in model.named_parameters()}
    from ettin.train.composer import composer_name

    for group in opt.param_groups:
        assert int(group["step"]) == 40 and group["max_lr"] == 3e-3 and group["setup"]
        for p in group["params"]:
            published = raw["state"][composer_name(names[p], "mlm")]
            assert torch.equal(opt.state[p]["exp_avg"], published["exp_avg"])
            assert torch.equal(opt.state[p]["exp_avg_sq"], published["exp_avg_sq"])
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 3e-4}


def test_index_keyed_optimizer_state_reads_the_same(tmp_path):
    hf = hf_model("mlm", seed=4)
    by_name = composer_checkpoint(tmp_path / "a.pt", hf, "mlm", batch=8, tokens=800)
    by_index = composer_checkpoint(tmp_path / "b.pt", hf, "mlm", batch=8, tokens=800, by_index=True)
    a = import_composer(by_name, tmp_path / "a", log=lambda *_: None)
    b = import_composer(by_index, tmp_path / "b", log=lambda *_: None)
    states = []
    for written in (a, b):
        model = ckpt.load_model(written).train()
        opt = build_optimizer(model, TrainSection())
        ckpt.load_checkpoint(written, model, opt)
        states.append([opt.state[p]["exp_avg_sq"] for p in model.parameters()])
    assert all(torch.equal(x, y) for x, y in zip(*states))


def test_tied_weight_state_under_the_decoder_name(tmp_path):
    hf = hf_model("mlm", seed=5)
    path = composer_checkpoint(tmp_path / "a.pt", hf, "mlm", batch=3, tokens=300)
    raw = torch.load(path, weights_only=False)
    optim = raw["state"]["optimizers"]["StableAdamW"]
    emb, tied = "model.bert.embeddings.tok_embeddings.weight", "model.decoder.weight"
    expected = optim["state"][emb]["exp_avg"].clone()
    optim["state"][tied] = optim["state"].pop(emb)
    for g in optim["param_groups"]:
        g["params"] = [tied if n == emb else n for n in g["params"]]
    torch.save(raw, tmp_path / "b.pt")
    written = import_composer(tmp_path / "b.pt", tmp_path / "run", log=lambda *_: None)
    model = ckpt.load_model(written).train()
    opt = build_optimizer(model, TrainSection())
    ckpt.load_checkpoint(written, model, opt)
    assert torch.equal(opt.state[model.embeddings.tok_embeddings.weight]["exp_avg"], expected)


@pytest.mark.parametrize("config, objective, needle", [
    ({"normalization": "rmsnorm"}, None, "normalization = 'rmsnorm'"),
    ({"final_norm": None}, None, "final_norm = None"),
    ({}, "clm", "--objective clm, but the checkpoint holds a mlm model"),
    ({"norm_kwargs": {"eps": 1e-5, "bias": True}}, None, "norm_kwargs.bias"),
])
def test_what_ettin_cannot_express_is_an_error(tmp_path, config, objective, needle):
    path = composer_checkpoint(tmp_path / "x.pt", hf_model("mlm"), "mlm", batch=1, tokens=10, config=config)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        import_composer(path, tmp_path / "run", objective=objective, log=lambda *_: None)


def test_missing_parts_and_files_are_named(tmp_path):
    path = composer_checkpoint(tmp_path / "x.pt", hf_model("mlm"), "mlm", batch=1, tokens=10, drop=("optimizers",))
    with pytest.raises(UserError, match="no state.optimizers"):
        import_composer(path, tmp_path / "run", log=lambda *_: None)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt: not readable"):
        import_composer(tmp_path / "junk.pt", tmp_path / "run2", log=lambda *_: None)


def test_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = composer_checkpoint(tmp_path / "ep0-ba7-rank0.pt", hf_model("clm"), "clm", batch=7, tokens=700)
    assert main(["import-composer", str(path), str(tmp_path / "run"), "--phase", "decay"]) == 0
    assert "phase decay step 7 at 700 real tokens" in capsys.readouterr().out
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["decay-step0000007"]
    assert main(["import-composer", str(path), str(tmp_path / "run")]) == 2  # already holds a checkpoint
    assert main(["import-composer", "owner/name/ep0-ba1-rank0.pt", str(tmp_path / "r3")]) == 2  # offline
    assert "hub is switched off" in capsys.readouterr().err
