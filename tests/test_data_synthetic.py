"""Synthetic rows (ettin.data.synthetic) go through the real collators, and their fingerprint sees the rows."""

import numpy as np
import pytest

from ettin.data.collate import IGNORE
from ettin.data.synthetic import SYNTHETIC_SPECIAL, SyntheticSource

CLS, SEP, MASK = (SYNTHETIC_SPECIAL[k] for k in ("bos_token_id", "eos_token_id", "mask_token_id"))


def source(objective, **kw):
    args = dict(vocab_size=200, seq_len=64, global_batch_size=32, seed=5, phase="p", objective=objective,
                mlm_probability=0.3) | kw
    return SyntheticSource(**args)


def test_clm_rows_are_the_content_with_next_token_labels():
    b = source("clm").batch(3)
    ids, labels = b["input_ids"], b["labels"]
    assert (ids[:, 0] == CLS).all() and (ids[:, 1:] >= 4).all() and b["attention_mask"].all()
    assert (labels[:, :-1] == ids[:, 1:]).all() and (labels[:, -1] == IGNORE).all()


@pytest.mark.parametrize("objective", ["mlm", "mntp"])
def test_masked_rows_get_bert_masking(objective):
    plain = source("clm").batch(0)["input_ids"]  # the same rows, unmasked
    b = source(objective).batch(0)
    ids, labels = b["input_ids"], b["labels"]
    assert (ids[:, 0] == CLS).all() and (ids[:, -1] == SEP).all()  # [CLS] content [SEP], as prepared data
    target = labels if objective == "mlm" else labels[:, :-1]  # mntp: the label of position i sits at i - 1
    selected = np.zeros(ids.shape, bool)
    if objective == "mlm":
        selected = (labels != IGNORE).numpy()
    else:
        selected[:, 1:] = (labels[:, :-1] != IGNORE).numpy()
    original = plain.numpy()
    assert (target[target != IGNORE].numpy() == original[selected]).all()
    assert not selected[:, [0, -1]].any() and 0.25 < selected.mean() < 0.35
    got = ids.numpy()[selected]
    share_mask, share_kept = np.mean(got == MASK), np.mean(got == original[selected])
    assert 0.75 < share_mask < 0.85 and 0.05 < share_kept < 0.15  # 80% [MASK], 10% random, 10% kept
    unselected = ~selected[:, 1:-1]
    assert (ids.numpy()[:, 1:-1][unselected] == original[:, 1:-1][unselected]).all()  # the rest as it was


def test_fingerprint_is_the_rows_and_the_same_for_every_objective(monkeypatch):
    fps = {o: source(o).fingerprint(10) for o in ("mlm", "clm", "mntp")}
    assert len(set(fps.values())) == 1 and len(fps["clm"]) == 64
    assert source("clm", seed=6).fingerprint(10) != fps["clm"] and source("clm").fingerprint(9) != fps["clm"]
    real = SyntheticSource.row

    def one_row_changed(self, step, row):
        tokens = real(self, step, row)
        return tokens[::-1].copy() if (step, row) == (9, 31) else tokens

    monkeypatch.setattr(SyntheticSource, "row", one_row_changed)
    assert source("clm").fingerprint(10) != fps["clm"]  # one row of the last batch differs: so does the hash


def test_ranks_slice_the_global_batch():
    """Rank r of w holds global rows r, r + w, ...: the rule of the prepared-data loader too."""
    whole = source("mlm").batch(2)
    parts = [source("mlm", rank=r, world_size=4).batch(2) for r in range(4)]
    for key in ("input_ids", "labels"):
        rebuilt = np.empty_like(whole[key].numpy())
        for r, part in enumerate(parts):
            rebuilt[r::4] = part[key].numpy()
        assert (rebuilt == whole[key].numpy()).all()
