"""PhaseLoader: one batch order for both objectives and every world size, O(1) resume, fingerprints."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ettin.data.loader import BatchSchedule, BatchWarmup, PhaseLoader, step_batches
from ettin.data.mixture import MixtureError
from ettin.data.shards import TokenDataset, write_token_dataset

SEQ = 128


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    from ettin.data.tokenizer import load_tokenizer

    return load_tokenizer(shared_data / "modernbert_tokenizer")


@pytest.fixture(scope="module")
def prepared(shared_data, tokenizer, tmp_path_factory):
    """Real text: 120 Wikipedia summaries and 6 Moby-Dick chapters, one prepared folder with two sources."""
    docs = {}
    for name, count in (("wikipedia_vital_summaries_en", 120), ("moby_dick_chapters", 6)):
        lines = (shared_data / "pretrain" / f"{name}.jsonl").read_text().splitlines()[:count]
        docs[name] = tokenizer.encode_batch([json.loads(line)["text"] for line in lines])
    return write_token_dataset(tmp_path_factory.mktemp("prepared"), docs, tokenizer.vocab_size)


def mixture(folder, wiki=1.0, moby=1.0):
    return {
        "name": "test",
        "sources": [
            {"name": "wiki", "path": str(folder), "subset": "wikipedia_vital_summaries_en", "weight": wiki},
            {"name": "moby", "path": str(folder), "subset": "moby_dick_chapters", "weight": moby},
        ],
    }


def make(prepared, tokenizer, objective="mlm", mode="chunk", **kw):
    args = dict(
        seq_len=SEQ, global_batch_size=8, seed=0, phase="pretrain", objective=objective, instances=mode
    )
    args.update(kw)
    return PhaseLoader(mixture(prepared), tokenizer, **args)


def originals(batch, objective):
    """Each row's token sequence without special tokens, undoing mlm/mntp corruption from the labels."""
    ids, labels = batch["input_ids"].clone(), batch["labels"]
    if objective == "mlm":
        ids = torch.where(labels != -100, labels, ids)
    elif objective == "mntp":
        ids[:, 1:] = torch.where(labels[:, :-1] != -100, labels[:, :-1], ids[:, 1:])
    keep = ids < 50279  # drop [CLS] [SEP] [PAD]
    return [row[k].tolist() for row, k in zip(ids, keep)]


@pytest.mark.parametrize("mode", ["chunk", "pack"])
def test_encoder_and_decoder_read_the_same_instances_in_the_same_order(prepared, tokenizer, mode):
    loaders = {o: make(prepared, tokenizer, o, mode) for o in ("mlm", "clm", "mntp")}
    prints = {o: loader.fingerprint(20) for o, loader in loaders.items()}
    assert len(set(prints.values())) == 1
    for step in (0, 3, 11):
        orders = [np.stack(loader.global_instances(step)) for loader in loaders.values()]
        assert all(np.array_equal(orders[0], o) for o in orders[1:])
        texts = {o: originals(loader.batch(step), o) for o, loader in loaders.items()}
        assert texts["mlm"] == texts["clm"] == texts["mntp"]
        assert sum(map(len, texts["mlm"])) > 0


@settings(max_examples=8, deadline=None)
@given(
    step=st.integers(0, 10_000),
    seed=st.integers(0, 3),
    batch=st.sampled_from([4, 7, 8]),
    objective=st.sampled_from(["mlm", "clm", "mntp"]),
    mode=st.sampled_from(["chunk", "pack"]),
)
def test_ranks_together_hold_exactly_the_global_batch(
    prepared, tokenizer, step, seed, batch, objective, mode
):
    whole = make(prepared, tokenizer, objective, mode, seed=seed, global_batch_size=batch).batch(step)
    for world in (2, 4):
        parts = [
            make(
                prepared,
                tokenizer,
                objective,
                mode,
                seed=seed,
                global_batch_size=batch,
                rank=r,
                world_size=world,
            ).batch(step)
            for r in range(world)
        ]
        for key, value in whole.items():
            rebuilt = torch.empty_like(value)
            for r, part in enumerate(parts):
                rebuilt[r::world] = part[key]
            assert torch.equal(rebuilt, value), key  # same rows, same masks, any world size


def test_order_is_independent_of_world_size_in_the_fingerprint(prepared, tokenizer):
    prints = {make(prepared, tokenizer, world_size=w, rank=w - 1).fingerprint(30) for w in (1, 2, 4)}
    assert len(prints) == 1


def test_resume_anywhere_without_replay(prepared, tokenizer):
    first = make(prepared, tokenizer)
    expected = {s: first.batch(s) for s in (0, 1, 2, 250)}
    resumed = make(prepared, tokenizer)  # a new process would build exactly this
    for s, batch in expected.items():
        assert all(torch.equal(batch[k], v) for k, v in resumed.batch(s).items())
    steps = list(zip((1, 2), step_batches(resumed, start_step=1, workers=0)))
    assert all(torch.equal(b["labels"].long(), expected[s]["labels"]) for s, (b, _) in steps)
    assert all(real == resumed.global_tokens(s) for s, (_, real) in steps)
    assert resumed.schedule.start(251) == 251 * 8  # the position step 251 reads from


def test_background_workers_do_not_change_the_order_or_the_global_rng_and_hand_over_copies(prepared, tokenizer):
    loader = make(prepared, tokenizer, "mlm", "pack")
    state = torch.get_rng_state()
    stream = step_batches(loader, start_step=5, workers=2, prefetch=2)
    batches = [next(stream) for _ in range(20)]  # kept: more than the workers' shared-memory slots
    stream.close()  # stops the workers
    assert torch.equal(torch.get_rng_state(), state)  # dropout's generator is left alone (bitwise resume)
    for i, (batch, real) in enumerate(batches):
        assert batch.keys() == loader.batch(5 + i).keys() and all(v.dtype == torch.int32 for v in batch.values())
        assert all(torch.equal(batch[k].long(), v) for k, v in loader.batch(5 + i).items())
        assert real == loader.global_tokens(5 + i)


def test_worker_batches_fit_in_shared_memory(prepared, tokenizer, monkeypatch, capsys):
    """The workers' rings, workers x (prefetch + 2) batches in /dev/shm (Docker's default is 64 MB; a full one is a bus
    error), are sized to its free space: fewer batches prefetched, then fewer workers, then batches built in the
    training thread, each said in one line; the batches are the same."""
    from ettin.data import loader as L

    source = make(prepared, tokenizer, "mlm", "pack")
    size = sum(v.numel() for v in source.batch(0).values()) * 4  # int32 in the ring
    made = []
    data_loader = torch.utils.data.DataLoader
    monkeypatch.setattr(torch.utils.data, "DataLoader", lambda *a, **kw: made.append(kw) or data_loader(*a, **kw))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    said = {(2, 2): None, (2, 1): "2 worker(s) prefetching 1 batch(es) each", (1, 1): "1 worker(s) prefetching 1",
            (0, None): "batches are built in the training thread"}
    for free, expected in ((16 * size, (2, 2)), (12 * size, (2, 1)), (6 * size, (1, 1)), (size, (0, None))):
        monkeypatch.setattr(L, "shm_free_bytes", lambda free=free: free, raising=False)  # half of it for the rings
        made.clear()
        stream = step_batches(source, start_step=3, workers=2, prefetch=2)
        batches = [next(stream) for _ in range(5)]
        stream.close()
        assert (made[0]["num_workers"], made[0]["prefetch_factor"]) == expected
        for i, (batch, real) in enumerate(batches):
            assert all(torch.equal(batch[k].long(), v) for k, v in source.batch(3 + i).items())
            assert real == source.global_tokens(3 + i)
        err = capsys.readouterr().err
        if said[expected] is None:
            assert err == ""
        else:
            assert len(err.splitlines()) == 1 and said[expected] in err and "docker run --shm-size=" in err
    # the numbers: 4608 rows of 7999 tokens (442 MB a batch), 4 workers, Docker's 64 MB
    workers, _, line = L.fit_shared_memory(4608 * 7999 * 3 * 4, 4, 4, 64 * 2**20)
    assert workers == 0 and "need 9.9 GiB of /dev/shm, which has 64 MiB free" in line and "--shm-size=20g" in line
    assert L.fit_shared_memory(576 * 7999 * 3 * 4, 4, 4, 8 * 2**30, ranks=8)[:2] == (3, 1)  # 8 ranks share 8 GiB
    assert L.fit_shared_memory(10**9, 4, 4, None) == (4, 4, None)  # no /dev/shm: nothing to fit


def test_fingerprint_changes_with_seed_phase_data_and_length(prepared, tokenizer):
    base = make(prepared, tokenizer).fingerprint(10)
    assert make(prepared, tokenizer, seed=1).fingerprint(10) != base
    assert make(prepared, tokenizer, phase="decay").fingerprint(10) != base
    assert make(prepared, tokenizer, mode="pack").fingerprint(10) != base
    assert make(prepared, tokenizer).fingerprint(11) != base
    loader = PhaseLoader(mixture(prepared, wiki=2.0), tokenizer, SEQ, 8, 0, "pretrain", "clm")
    assert loader.fingerprint(10) != base


def test_mixture_weights_are_honoured_in_tokens(prepared, tokenizer):
    loader = PhaseLoader(mixture(prepared, wiki=3, moby=1), tokenizer, SEQ, 32, 0, "pretrain", "clm")
    tokens = np.zeros(2)
    for step in range(40):
        src, inst = loader.global_instances(step)
        for s, i in zip(src.tolist(), inst.tolist()):
            tokens[s] += loader.indices[s].lengths[i]
    assert tokens[0] / tokens.sum() == pytest.approx(0.75, abs=0.03)


def test_batch_size_warmup_is_a_pure_linear_ramp(prepared, tokenizer):
    schedule = BatchSchedule(64, 100, BatchWarmup(start=4, tokens=20_000, multiple=4))
    sizes = [schedule.size(s) for s in range(60)]
    assert sizes[0] == 4 and sizes[-1] == 64 and sorted(sizes) == sizes
    assert all(s % 4 == 0 for s in sizes)
    assert all(schedule.start(s + 1) == schedule.start(s) + sizes[s] for s in range(59))
    ramp = len(schedule.ramp_sizes)
    assert 20_000 <= schedule.start(ramp) * 100 <= 20_000 + 64 * 100  # the ramp spans the token budget
    warm = make(
        prepared, tokenizer, global_batch_size=16, batch_warmup=BatchWarmup(start=4, tokens=4000, multiple=2)
    )
    assert warm.batch(0)["input_ids"].shape == (4, SEQ)
    assert warm.batch(200)["input_ids"].shape == (16, SEQ)
    halves = [
        make(
            prepared,
            tokenizer,
            global_batch_size=16,
            rank=r,
            world_size=2,
            batch_warmup=BatchWarmup(start=4, tokens=4000, multiple=2),
        ).batch(3)
        for r in (0, 1)
    ]
    whole = warm.batch(3)
    assert torch.equal(
        torch.stack([halves[0]["labels"], halves[1]["labels"]], 1).flatten(0, 1), whole["labels"]
    )


class CountingDataset:
    """A TokenDataset that records which documents are read."""

    def __init__(self, ds):
        self.ds, self.read = ds, set()

    def __getattr__(self, name):
        return getattr(self.ds, name)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        self.read.add(i)
        return self.ds[i]


def test_each_rank_reads_only_its_rows(prepared, tokenizer):
    whole = make(prepared, tokenizer, global_batch_size=8)
    src, inst = whole.global_instances(7)
    for rank in (0, 1):
        ds = CountingDataset(TokenDataset(prepared))
        loader = make(
            prepared,
            tokenizer,
            global_batch_size=8,
            rank=rank,
            world_size=2,
            datasets={"wiki": ds, "moby": ds},
        )
        loader.batch(7)
        mine = {
            int(d) for s, i in zip(src[rank::2], inst[rank::2]) for d in loader.indices[s].spans_of(i)[:, 0]
        }
        assert ds.read == mine


def test_the_mixture_chooses_the_instances_unless_the_loader_says(prepared, tokenizer):
    spec = {**mixture(prepared), "instances": {"mode": "pack", "open_rows": 4}}
    assert PhaseLoader(spec, tokenizer, SEQ, 8, 0, "pretrain", "clm").instance_config.open_rows == 4
    assert PhaseLoader(spec, tokenizer, SEQ, 8, 0, "pretrain", "clm", instances="chunk").packed is False
    assert (
        PhaseLoader(mixture(prepared), tokenizer, SEQ, 8, 0, "pretrain", "clm").instance_config.mode
        == "chunk"
    )


def test_bad_setups_are_clear_errors(prepared, tokenizer, tmp_path):
    missing = mixture(tmp_path / "nowhere")
    with pytest.raises(MixtureError, match=r"sources\[wiki\]\.path"):
        PhaseLoader(missing, tokenizer, SEQ, 8, 0, "pretrain", "mlm")
    wrong = mixture(prepared)
    wrong["sources"][1]["subset"] = "gutenberg"
    with pytest.raises(MixtureError, match="gutenberg.*moby_dick_chapters"):
        PhaseLoader(wrong, tokenizer, SEQ, 8, 0, "pretrain", "mlm")
    with pytest.raises(ValueError, match="world_size"):
        make(prepared, tokenizer, global_batch_size=2, world_size=4, rank=0)
    with pytest.raises(ValueError, match="objective"):
        make(prepared, tokenizer, objective="lm")


def _rank_main(rank, world, folder, tokenizer_dir, init_file, out):
    import torch.distributed as dist

    from ettin.data.tokenizer import load_tokenizer

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    loader = PhaseLoader(
        mixture(folder),
        load_tokenizer(tokenizer_dir),
        SEQ,
        8,
        0,
        "pretrain",
        "mlm",
        rank=rank,
        world_size=world,
        instances="pack",
    )
    batch = loader.batch(5)
    gathered = {}
    for key, value in batch.items():
        parts = [torch.empty_like(value) for _ in range(world)]
        dist.all_gather(parts, value)
        gathered[key] = parts
    prints = [None] * world
    dist.all_gather_object(prints, loader.fingerprint(10))
    if rank == 0:
        torch.save({"batch": gathered, "prints": prints}, out)
    dist.destroy_process_group()


@pytest.mark.dist
def test_two_gloo_ranks_see_exactly_the_global_batch(prepared, tokenizer, shared_data, tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    out = tmp_path / "gathered.pt"
    args = (2, str(prepared), str(shared_data / "modernbert_tokenizer"), str(tmp_path / "init"), str(out))
    procs = [ctx.Process(target=_rank_main, args=(r, *args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    result = torch.load(out)
    single = make(prepared, tokenizer, "mlm", "pack")
    whole = single.batch(5)
    for key, value in whole.items():
        rebuilt = torch.empty_like(value)
        for r, part in enumerate(result["batch"][key]):
            rebuilt[r::2] = part
        assert torch.equal(rebuilt, value), key
    assert result["prints"] == [single.fingerprint(10)] * 2
