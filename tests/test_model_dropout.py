"""Attention-output dropout (the published recipe's attn_out_dropout_prob 0.1, after Wo): active in training only,
invisible in evaluation, and not exported (transformers' `attention_dropout` would drop the probabilities too)."""

import json

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
