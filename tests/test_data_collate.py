"""Collators: framing per objective, MLM 80/10/10 masking, CLM shifted labels, MNTP, packed positions."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ettin.data.collate import IGNORE, SpecialTokens, collate, frame, row_keys

SPECIAL = SpecialTokens(cls_id=1, sep_id=2, pad_id=0, mask_id=3, num_tokens=100, special_ids=(4,))
CONTENT = (5, 100)  # ids a document may hold


def segments_strategy(seq_len):
    """Rows of (tokens, ends_doc) segments that fit seq_len (2 slots per segment reserved)."""

    @st.composite
    def rows(draw):
        out = []
        for _ in range(draw(st.integers(1, 4))):
            budget, row = seq_len, []
            for _ in range(draw(st.integers(1, 4))):
                if budget < 3:
                    break
                n = draw(st.integers(1, budget - 2))
                tokens = np.array(
                    draw(st.lists(st.integers(*CONTENT).map(lambda x: min(x, 99)), min_size=n, max_size=n)),
                    dtype=np.uint16,
                )
                row.append((tokens, draw(st.booleans())))
                budget -= n + 2
            out.append(row)
        return out

    return rows()


def keys_for(n, step=0):
    return row_keys(0, "test", step, np.arange(n))


@settings(max_examples=50, deadline=None)
@given(
    rows=segments_strategy(40),
    rate=st.sampled_from([0.15, 0.3, 0.5]),
    objective=st.sampled_from(["mlm", "mntp"]),
)
def test_masking_invariants(rows, rate, objective):
    framed = frame(rows, 40, objective, SPECIAL, packed=True)
    original = torch.from_numpy(framed.input_ids)
    out = collate(framed, objective, SPECIAL, keys_for(len(rows)), rate)
    ids, labels = out["input_ids"], out["labels"]
    special = torch.isin(original, torch.tensor(SPECIAL.special_ids))
    changed = ids != original
    assert not changed[special].any()  # [CLS], [SEP], [PAD] never corrupted
    if objective == "mlm":
        selected = labels != IGNORE
        assert torch.equal(labels[selected], original[selected])  # labels: the original token, only there
    else:  # mntp: the label of selected position i sits at i - 1
        selected = torch.zeros_like(labels, dtype=torch.bool)
        selected[:, 1:] = labels[:, :-1] != IGNORE
        assert torch.equal(labels[:, :-1][selected[:, 1:]], original[:, 1:][selected[:, 1:]])
        assert (labels[:, -1] == IGNORE).all()
    assert not selected[special].any()  # special tokens and padding are never selected
    assert not changed[~selected].any()  # nothing outside the selection changes
    assert (out["attention_mask"] == (original != SPECIAL.pad_id).long()).all()
    pool = torch.from_numpy(SPECIAL.replacement_ids())
    replaced = ids[changed & (ids != SPECIAL.mask_id)]
    assert torch.isin(replaced, pool).all()  # random replacements are never special tokens


def test_masking_rate_and_80_10_10_split():
    rng = np.random.default_rng(0)
    rows = [[(rng.integers(*CONTENT, size=510).astype(np.uint16), True)] for _ in range(64)]
    for rate in (0.3, 0.15):
        framed = frame(rows, 512, "mlm", SPECIAL, packed=False)
        out = collate(framed, "mlm", SPECIAL, keys_for(64, step=int(rate * 100)), rate)
        original = torch.from_numpy(framed.input_ids)
        selected = out["labels"] != IGNORE
        maskable = 64 * 510
        assert selected.sum().item() / maskable == pytest.approx(rate, abs=0.01)  # ~4 sigma
        picked = out["input_ids"][selected]
        n = selected.sum().item()
        as_mask = (picked == SPECIAL.mask_id).sum().item() / n
        kept = (picked == original[selected]).sum().item() / n
        randomised = 1 - as_mask - kept
        assert as_mask == pytest.approx(0.8, abs=0.02)
        assert kept == pytest.approx(0.1 + 0.1 / 95, abs=0.015)  # a random draw may hit the original
        assert randomised == pytest.approx(0.1 - 0.1 / 95, abs=0.015)


def test_masking_noise_is_uniform_and_independent_of_the_token():
    """The counter-based noise: random replacements spread evenly over the pool (chi-square), the selection does
    not depend on the position in the row or on the token there, and neighbours are selected independently."""
    from scipy import stats

    rows = [[(np.full(1022, 50 + b % 2, dtype=np.uint16), True)] for b in range(256)]
    framed = frame(rows, 1024, "mlm", SPECIAL, packed=False)
    out = collate(framed, "mlm", SPECIAL, keys_for(256), 0.3)
    ids, selected = out["input_ids"].numpy(), (out["labels"] != IGNORE).numpy()
    pool = SPECIAL.replacement_ids()
    replaced = ids[selected & (ids != SPECIAL.mask_id) & (ids != framed.input_ids)]
    counts = np.bincount(np.searchsorted(pool, replaced), minlength=len(pool))
    counts = np.delete(counts, np.searchsorted(pool, [50, 51]))  # a draw of the original token counts as kept
    assert stats.chisquare(counts).pvalue > 1e-3
    content = selected[:, 1:1023]
    halves = content[:, :511].mean(), content[:, 511:].mean()
    assert all(h == pytest.approx(0.3, abs=0.005) for h in halves)  # 130k positions each: ~4 sigma
    assert content[0::2].mean() == pytest.approx(content[1::2].mean(), abs=0.006)  # token 50 rows vs token 51
    both = (content[:, :-1] & content[:, 1:]).mean()
    assert both == pytest.approx(0.09, abs=0.003)  # P(t and t + 1 selected) = 0.3^2


@settings(max_examples=50, deadline=None)
@given(rows=segments_strategy(48))
def test_clm_labels_shift_within_documents_only(rows):
    framed = frame(rows, 48, "clm", SPECIAL, packed=True)
    out = collate(framed, "clm", SPECIAL)
    ids, labels, seg = out["input_ids"], out["labels"], framed.segment
    for b, row in enumerate(rows):
        t = 0
        for s, (tokens, ends_doc) in enumerate(row):
            n = len(tokens) + 1 + int(ends_doc)  # [CLS] tokens ([SEP] only at a document's end)
            assert ids[b, t] == SPECIAL.cls_id
            assert ids[b, t + n - 1] == (SPECIAL.sep_id if ends_doc else int(tokens[-1]))
            assert torch.equal(labels[b, t : t + n - 1], ids[b, t + 1 : t + n])
            assert labels[b, t + n - 1] == IGNORE  # no loss across the boundary
            assert (seg[b, t : t + n] == s).all()
            t += n
        assert (labels[b, t:] == IGNORE).all() and (ids[b, t:] == SPECIAL.pad_id).all()


@settings(max_examples=50, deadline=None)
@given(rows=segments_strategy(48), objective=st.sampled_from(["mlm", "clm", "mntp"]))
def test_packed_position_ids_restart_at_every_document(rows, objective):
    framed = frame(rows, 48, objective, SPECIAL, packed=True)
    out = collate(framed, objective, SPECIAL, keys_for(len(rows)), 0.3)
    pos = out["position_ids"]
    for b in range(len(rows)):
        seg = framed.segment[b]
        for s in range(len(rows[b])):
            where = np.nonzero(seg == s)[0]
            assert np.array_equal(pos[b, where].numpy(), np.arange(len(where)))
            assert out["input_ids"][b, where[0]] == SPECIAL.cls_id  # each document starts with [CLS]
        starts = (pos[b] == 0).sum().item()
        assert starts == len(rows[b]) + int((seg < 0).any())


def test_encoder_framing_always_ends_with_sep_and_unpacked_rows_have_no_positions():
    rows = [[(np.array([7, 8, 9], dtype=np.uint16), False)]]
    for objective in ("mlm", "mntp"):
        framed = frame(rows, 8, objective, SPECIAL, packed=False)
        assert framed.input_ids[0].tolist() == [1, 7, 8, 9, 2, 0, 0, 0]
        assert "position_ids" not in collate(framed, objective, SPECIAL, keys_for(1), 0.3)
    assert frame(rows, 8, "clm", SPECIAL, packed=False).input_ids[0].tolist() == [1, 7, 8, 9, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="do not fit"):
        frame(rows, 4, "mlm", SPECIAL, packed=False)


def test_masks_are_keyed_by_row_not_by_batch_position():
    rng = np.random.default_rng(1)
    rows = [[(rng.integers(*CONTENT, size=30).astype(np.uint16), True)] for _ in range(4)]
    full = collate(frame(rows, 32, "mlm", SPECIAL, False), "mlm", SPECIAL, keys_for(4), 0.3)
    # rows 1 and 3 alone (a rank of a 2-process run) with their own row keys: same result
    part_keys = row_keys(0, "test", 0, np.array([1, 3]))
    part = collate(frame([rows[1], rows[3]], 32, "mlm", SPECIAL, False), "mlm", SPECIAL, part_keys, 0.3)
    assert torch.equal(part["input_ids"], full["input_ids"][[1, 3]])
    assert torch.equal(part["labels"], full["labels"][[1, 3]])
    other_step = collate(frame(rows, 32, "mlm", SPECIAL, False), "mlm", SPECIAL, keys_for(4, step=1), 0.3)
    assert not torch.equal(other_step["labels"], full["labels"])


def test_special_tokens_from_the_modernbert_tokenizer(shared_data):
    from tokenizers import Tokenizer

    from ettin.data.tokenizer import load_tokenizer

    info = load_tokenizer(shared_data / "modernbert_tokenizer")
    for source in (
        info,
        Tokenizer.from_file(str(shared_data / "modernbert_tokenizer" / "tokenizer.json")),
        shared_data / "modernbert_tokenizer",
    ):
        special = SpecialTokens.coerce(source)
        assert (special.cls_id, special.sep_id, special.pad_id, special.mask_id) == (
            50281,
            50282,
            50283,
            50284,
        )
        assert special.num_tokens == 50368
        pool = special.replacement_ids()
        assert 50281 not in pool and 50279 not in pool and 1 not in pool and 15 in pool


def test_special_tokens_from_a_mapping_and_errors():
    special = SpecialTokens.coerce(
        dict(cls_token_id=1, sep_token_id=2, pad_token_id=0, mask_token_id=3, vocab_size=10)
    )
    assert special.replacement_ids().tolist() == list(range(4, 10))
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        SpecialTokens.coerce(dict(cls_id=1, sep_id=2, pad_id=0, vocab_size=10))
    with pytest.raises(ValueError, match="mlm_probability"):
        collate(frame([[(np.array([5]), True)]], 4, "mlm", SPECIAL, False), "mlm", SPECIAL, keys_for(1), 1.5)
