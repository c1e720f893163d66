"""Attention-output dropout (the published recipe's attn_out_dropout_prob 0.1, after Wo): active in training only,
invisible in evaluation, and not exported (transformers' `attention_dropout` would drop the probabilities too)."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from ettin.config import preset
from ettin.hf import from_pretrained, save_pretrained
from ettin.model import EttinModel

SPECIAL = dict(vocab_size=128, pad_token_id=0, bos_token_id=1, eos_token_id=2, mask_token_id=3)


def pair(objective: str) -> tuple[EttinModel, EttinModel]:
    torch.manual_seed(0)
    dropped = EttinModel(preset("tiny", objective, attention_output_dropout=0.1, **SPECIAL))
    plain = EttinModel(preset("tiny", objective, **SPECIAL))
    plain.load_state_dict(dropped.state_dict())  # dropout has no weights: the same state dict
    return dropped, plain


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_dropout_acts_in_training_only(objective):
    dropped, plain = pair(objective)
    ids = torch.randint(4, 128, (2, 40))
    assert sum(isinstance(m, torch.nn.Dropout) for m in dropped.modules()) == dropped.config.num_layers
    dropped.train(), plain.train()
    a, b, c = (m(ids).logits for m in (dropped, dropped, plain))
    assert not torch.equal(a, b) and not torch.equal(a, c)  # a fresh mask each forward
    dropped.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(dropped(ids).logits, plain(ids).logits, rtol=0, atol=0)


def test_dropout_sits_after_the_output_projection():
    """Each element of an attention branch's output is either dropped (0) or Wo's output scaled by 1 / (1 - p),
    as bert24's `nn.Dropout(attn_out_dropout_prob)` after Wo; the MLP branch is untouched."""
    dropped, _ = pair("mlm")
    dropped.train()
    seen = {}
    block = dropped.layers[1]
    block.attn.Wo.register_forward_hook(lambda m, i, o: seen.__setitem__("wo", o.detach()))
    block.attn.register_forward_hook(lambda m, i, o: seen.__setitem__("attn", o.detach()))
    dropped(torch.randint(4, 128, (2, 40)))
    wo, out = seen["wo"], seen["attn"]
    kept = out != 0
    assert 0.8 < kept.float().mean() < 0.97  # about 10% dropped
    torch.testing.assert_close(out[kept], wo[kept] / 0.9)


@pytest.mark.parametrize("objective", ["mlm", "clm"])
def test_export_writes_no_dropout_and_matches_in_evaluation(objective, tmp_path):
    dropped, _ = pair(objective)
    save_pretrained(dropped.eval(), tmp_path / "hf", weights_only=True)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["attention_dropout"] == 0.0  # transformers' attention_dropout would drop probabilities too
    cls = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    hf = cls.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    ids = torch.randint(4, 128, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(dropped(ids).logits, hf(input_ids=ids).logits, atol=1e-4, rtol=0)
    assert from_pretrained(str(tmp_path / "hf")).config.attention_output_dropout == 0.0  # a training setting


def test_finetuning_is_the_same_from_a_checkpoint_and_from_its_export(tmp_path, one_thread):
    """`ettin eval runs/x` (a checkpoint, which keeps its training dropout) and `ettin eval runs/x/final` (its export,
    which has none) fine-tune the same weights the same way: every fine-tuning in `ettin eval` uses the published
    fine-tuning's dropouts (ettin.eval.tasks.common.FINETUNE_DROPOUT), whatever folder the model came from."""
    from downstream_tiny import tokenizer
    from ettin.eval.runner import load_subject, resolve_targets
    from ettin.eval.tasks.classification import fit_head
    from ettin.eval.tasks.common import FINETUNE_DROPOUT, FinetuneSettings
    from ettin.train.checkpoint import export_hf, save_checkpoint

    tok = tokenizer([f"the {w} went to the {v} and sat" for w in ("cat", "dog", "owl") for v in ("mat", "barn")])
    ids = {f"{n}_token_id": tok.token_to_id(t) for n, t in
           (("pad", "[PAD]"), ("bos", "[CLS]"), ("eos", "[SEP]"), ("mask", "[MASK]"))}
    cfg = preset("tiny", "mlm", vocab_size=tok.get_vocab_size(), attention_output_dropout=0.1, **ids)
    run = tmp_path / "run"
    run.mkdir()
    tok.save(str(run / "tokenizer.json"))
    ckpt = save_checkpoint(run, "stable-step0000002", EttinModel(cfg), None,
                           {"run": "run", "phase": "stable", "step": 2, "tokens": 20, "model_config": cfg.to_dict()})
    export_hf(ckpt, run / "final")
    subjects = [load_subject(resolve_targets(str(p))[0], "cpu", 64) for p in (ckpt, run / "final")]
    assert [s.model.config.attention_output_dropout for s in subjects] == [0.1, 0.0]  # what each folder holds
    g = torch.Generator().manual_seed(1)
    seqs = [[ids["bos_token_id"], *torch.randint(5, tok.get_vocab_size(), (int(n),), generator=g).tolist(),
             ids["eos_token_id"]] for n in torch.randint(3, 20, (16,), generator=g)]
    y = np.arange(16) % 2
    tuned = [fit_head(s, seqs, y, 2, False, "cls", FinetuneSettings(epochs=2, batch_size=4), 0)[0] for s in subjects]
    for model in tuned:
        assert model.config.attention_output_dropout == FINETUNE_DROPOUT["attention_output_dropout"] == 0.1
        assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == cfg.num_layers
    a, b = (m.state_dict() for m in tuned)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], subjects[0].model.state_dict()[k]) for k in a)  # it did train
