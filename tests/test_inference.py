import copy
import gc

import pytest
import torch

from ettin.config import preset
from ettin.inference import Decoder, embed, fill_mask, generate, pool
from ettin.model import EttinModel

SPECIAL = dict(pad_token_id=3, bos_token_id=1, eos_token_id=2, mask_token_id=4)


def dec():
    m = EttinModel(preset("tiny", "clm", vocab_size=96, local_attention=8, **SPECIAL)).eval()
    for p in m.parameters():
        if p.dim() > 1:
            p.data.normal_(0, 0.3)
    return m


def test_kv_cache_generation_equals_recomputation():
    m = dec()
    prompt = torch.randint(5, 96, (3, 9))
    a = generate(m, prompt, max_new_tokens=20, use_cache=True)
    b = generate(m, prompt, max_new_tokens=20, use_cache=False)
    assert torch.equal(a, b)


def test_left_padded_batch_generates_like_single_prompts():
    m = dec()
    p1, p2 = torch.randint(5, 96, (1, 9)), torch.randint(5, 96, (1, 5))
    batch = torch.full((2, 9), 3)
    batch[0], batch[1, 4:] = p1[0], p2[0]
    mask = (torch.arange(9)[None] >= torch.tensor([[0], [4]])).long()
    out = generate(m, batch, max_new_tokens=12, attention_mask=mask)
    assert torch.equal(out[0, 9:], generate(m, p1, max_new_tokens=12)[0, 9:])
    assert torch.equal(out[1, 9:], generate(m, p2, max_new_tokens=12)[0, 5:])


def test_sampling_is_seeded_and_stops_at_eos():
    m = dec()
    prompt = torch.randint(5, 96, (2, 4))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = generate(m, prompt, 15, temperature=0.8, top_k=10, top_p=0.9, generator=g1)
    b = generate(m, prompt, 15, temperature=0.8, top_k=10, top_p=0.9, generator=g2)
    assert torch.equal(a, b)
    # force EOS: bias the decoder towards token 2
    m.decoder_bias.data[2] = 100.0
    out = generate(m, prompt, 10, eos_token_id=2)
    assert out.shape[1] == 5 and torch.all(out[:, -1] == 2)


def test_top_k_one_is_greedy():
    m = dec()
    prompt = torch.randint(5, 96, (2, 6))
    assert torch.equal(generate(m, prompt, 8, temperature=1.0, top_k=1), generate(m, prompt, 8))


def test_generate_rejects_encoder():
    m = EttinModel(preset("tiny", "mlm", vocab_size=96, **SPECIAL))
    with pytest.raises(ValueError, match="decoder"):
        generate(m, torch.ones(1, 3, dtype=torch.long))


def test_pooling():
    h = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])
    assert pool(h, mask, "cls").flatten().tolist() == [0.0, 5.0]
    assert pool(h, mask, "last").flatten().tolist() == [2.0, 7.0]
    assert pool(h, mask, "mean").flatten().tolist() == [1.0, 6.0]
    with pytest.raises(ValueError):
        pool(h, mask, "max")


def test_embed_is_padding_invariant():
    m = EttinModel(preset("tiny", "mlm", vocab_size=96, **SPECIAL)).eval()
    ids = torch.randint(5, 96, (1, 7))
    padded = torch.cat([ids, torch.full((1, 5), 3)], 1)
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 5)], 1).long()
    for pooling in ("cls", "mean", "last"):
        torch.testing.assert_close(embed(m, ids, pooling=pooling), embed(m, padded, mask, pooling), atol=1e-5,
                                   rtol=1e-5)


def test_fill_mask(shared_data):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(shared_data / "modernbert_tokenizer" / "tokenizer.json"))
    m = EttinModel(preset("tiny", "mlm")).eval()
    m.decoder_bias.data[6181] = 50.0  # " France"
    preds = fill_mask(m, tok, "The capital of [MASK] is Paris.", top_k=3)
    assert len(preds) == 1 and preds[0][0][0].strip() == "France" and preds[0][0][1] > 0.9


def test_cached_decoding_runs_through_attend_with_the_cache(monkeypatch):
    """Every layer of every cached forward (the prompt and each step) calls `ettin.attention.attend` with the
    KV cache: one attention path for training and decoding."""
    import ettin.model

    m = dec()
    seen = []
    real = ettin.model.attend

    def spy(*a, cache=None, layer=0, **k):
        seen.append((cache is not None, layer))
        return real(*a, cache=cache, layer=layer, **k)

    monkeypatch.setattr(ettin.model, "attend", spy)
    generate(m, torch.randint(5, 96, (2, 6)), max_new_tokens=3)
    layers = m.config.num_layers
    assert seen == [(True, i) for _ in range(3) for i in range(layers)]


def _padded_prompts():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 96, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    ids[1, :6], mask[1, :6] = 3, 0
    return ids, mask


def test_compiled_step_run_eagerly_decodes_like_the_eager_path(monkeypatch):
    """A compiled Decoder's step with `torch.compile` left out (every step reads all of the rounded cache's slots
    under the mask, through `KVCache.step_view`): a left-padded batch that crosses the local window and stops at
    EOS gives the eager path's tokens, and the steps take the step path."""
    from ettin.attention import KVCache

    m = dec()
    ids, mask = _padded_prompts()
    eos = int(generate(m, ids, 6, attention_mask=mask)[0, -1])  # row 0 stops early, the others go on
    ref = generate(m, ids, 24, attention_mask=mask, eos_token_id=eos)
    views = []
    real_view = KVCache.step_view.__func__

    def view(cls, *a):
        views.append(real_view(cls, *a))
        return views[-1]

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    monkeypatch.setattr(KVCache, "step_view", classmethod(view))
    got = generate(Decoder(m, compile=True), ids, 24, attention_mask=mask, eos_token_id=eos)
    assert views and views[0].length == 128  # 11 + 24 slots rounded up to STATIC_ROUND
    assert torch.equal(got, ref) and (ref == eos).any()


def _tensor_bytes(objects) -> int:
    """Bytes of the distinct tensor storages among `objects`."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in objects if isinstance(t, torch.Tensor)}
    return sum(storages.values())


def _copy_bytes(module: torch.nn.Module) -> int:
    """Bytes of every tensor a deep copy of `module` makes (the copy's memo holds each copied object)."""
    memo: dict = {}
    copy.deepcopy(module, memo)
    return _tensor_bytes(memo.values())


def test_decoding_leaves_the_model_as_it_found_it():
    """The weight copies belong to the Decoder: after a generation (its own Decoder, or one kept and dropped), the
    model holds no extra attribute or tensor, and a deep copy of it costs what its parameters cost."""
    m = dec()
    keys = set(m.__dict__)
    params = _tensor_bytes(list(m.parameters()) + list(m.buffers()))
    assert _copy_bytes(m) == params
    prompt = torch.randint(5, 96, (2, 6))
    ref = generate(m, prompt, max_new_tokens=20)  # a Decoder for this call
    assert set(m.__dict__) == keys and _copy_bytes(m) == params
    d = Decoder(m)
    assert torch.equal(generate(d, prompt, max_new_tokens=20), ref)
    assert _tensor_bytes(d._buffers.values()) > 0  # the copies were made, and are the Decoder's
    del d
    gc.collect()
    assert set(m.__dict__) == keys and _copy_bytes(m) == params


@pytest.mark.slow
def test_compiled_decoding_generates_like_eager_and_recompiles_when_asked():
    """`Decoder(compile=True)` (inductor, frozen weights): the padded batch with an EOS stop gives the eager tokens;
    another prompt length in the same rounded cache reuses the one compiled step. After the weights change, a
    change it can see is refused until `recompile()`, which then decodes with the new weights and leaves the
    process's other compiled graphs compiled; the model holds nothing of it."""
    import torch._dynamo.utils

    m = dec()
    keys = set(m.__dict__)
    other = torch.compile(lambda x: x * 2 + 1)  # another compiled graph of the process (as the training blocks')
    other(torch.ones(3))
    dc = Decoder(m, compile=True)
    ids, mask = _padded_prompts()
    eos = int(generate(m, ids, 6, attention_mask=mask)[0, -1])
    torch._dynamo.utils.counters.clear()
    got = generate(dc, ids, 24, attention_mask=mask, eos_token_id=eos)
    assert torch.equal(got, generate(m, ids, 24, attention_mask=mask, eos_token_id=eos))
    short = ids[:, 4:]
    before = generate(dc, short, 30)
    assert torch.equal(before, generate(m, short, 30))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    with torch.no_grad():  # a different model from here on (a projection's weight, which the compile packs)
        for block in m.layers:
            block.mlp.Wi.weight.mul_(-1.5)
    changed = generate(m, short, 30)
    assert not torch.equal(changed, before)
    with pytest.raises(RuntimeError, match="recompile"):
        generate(dc, short, 30)
    assert torch.equal(generate(dc.recompile(), short, 30), changed)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    other(torch.ones(3))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # still compiled: nothing was reset
    assert torch.equal(generate(copy.deepcopy(m), short, 30), changed)  # a copy decodes eagerly, the same tokens
    import weakref

    import ettin.inference

    assert not [k for k in vars(ettin.inference) if k.startswith("__compiled_fn")]  # the graphs are dc's own
    gone = weakref.ref(dc._step.fn)
    del dc
    gc.collect()
    assert set(m.__dict__) == keys and gone() is None


def test_left_padded_batch_generates_like_transformers(tmp_path):
    """A batch of prompts of different lengths, left-padded, greedy: token for token what transformers'
    `generate` gives for the same weights and attention mask (the window is crossed)."""
    pytest.importorskip("transformers")
    from transformers import ModernBertDecoderConfig, ModernBertDecoderForCausalLM

    from ettin.hf import from_pretrained

    hf = ModernBertDecoderForCausalLM(ModernBertDecoderConfig(
        vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        local_attention=16, pad_token_id=3, bos_token_id=1, eos_token_id=2, attn_implementation="eager")).eval()
    for p in hf.parameters():
        if p.dim() > 1:
            p.data.normal_(0, 0.2)
    hf.save_pretrained(tmp_path / "hf")
    m = from_pretrained(tmp_path / "hf")
    g = torch.Generator().manual_seed(0)
    lengths = [12, 5, 9, 1]
    ids = torch.full((4, 12), 3)
    mask = torch.zeros(4, 12, dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, 12 - n :] = torch.randint(5, 96, (n,), generator=g)
        mask[r, 12 - n :] = 1
    ref = hf.generate(ids, attention_mask=mask, max_new_tokens=20, min_new_tokens=20, do_sample=False,
                      eos_token_id=None, pad_token_id=3)
    got = generate(m, ids, max_new_tokens=20, attention_mask=mask)
    assert torch.equal(got, ref)


def test_decoding_weight_copies_follow_the_weights():
    """Cached decoding reads (in, out) copies of the head and the wide projections (made once per cache, into
    buffers the Decoder keeps): after the weights change, even through `.data`, the next generation follows them."""
    m = dec()
    d = Decoder(m)
    prompt = torch.randint(5, 96, (2, 6))
    generate(d, prompt, max_new_tokens=20)
    assert d._buffers, "no copies were made"
    for p in m.parameters():
        if p.dim() > 1:
            p.data.normal_(0, 0.3)
    assert torch.equal(generate(d, prompt, max_new_tokens=20), generate(m, prompt, max_new_tokens=20, use_cache=False))
