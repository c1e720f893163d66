"""Phase mixtures: YAML presets and validation, keyed permutations, draw counts and the position map."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ettin.data.keyed import permute
from ettin.data.mixture import (
    Mixture,
    MixtureError,
    MixturePlan,
    MixtureSource,
    load_mixture,
    mixture_from_dict,
)

PRESETS = Path(__file__).resolve().parents[1] / "recipes" / "data"
PUBLISHED = {  # reference section 4: phase -> (sources, total billions of tokens)
    "ettin_pretrain": (13, 1704.7),
    "ettin_extension": (10, 249.3),
    "ettin_decay": (9, 76.3),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_presets_match_the_reference_table(name):
    mixture = load_mixture(PRESETS / f"{name}.yaml")
    count, total = PUBLISHED[name]
    assert len(mixture.sources) == count and mixture.kind == "tokens"
    assert sum(s.amount for s in mixture.sources) / 1e9 == pytest.approx(total, abs=0.05)
    assert all(s.hub and s.hub.startswith("jhu-clsp/ettin-") for s in mixture.sources)
    # -c L -m 512 -a 128 --backfill --backfill_no_duplicates, as the reference chunked its data
    inst = mixture.instances
    assert (inst.mode, inst.min_len, inst.skip_below, inst.backfill, inst.backfill_duplicates) == (
        "chunk",
        512,
        128,
        True,
        False,
    )


def test_pretrain_preset_shares():
    mixture = load_mixture(PRESETS / "ettin_pretrain.yaml")
    shares = dict(zip([s.name for s in mixture.sources], mixture.shares() * 100))
    assert shares["dclm"] == pytest.approx(49.1, abs=0.1) and shares["starcoder"] == pytest.approx(
        15.5, abs=0.1
    )


def test_demo_presets_use_the_local_files(monkeypatch, shared_data):
    monkeypatch.delenv("ETTIN_DEMO_DATA", raising=False)
    files = {p.stem: load_mixture(p) for p in PRESETS.glob("demo_*.yaml")}
    assert set(files) == {"demo_pretrain", "demo_extension", "demo_decay"}
    assert {s.name for s in files["demo_pretrain"].sources} == {"wikipedia", "sotu", "gutenberg"}
    decay = dict(zip([s.name for s in files["demo_decay"].sources], files["demo_decay"].shares()))
    pretrain = dict(zip([s.name for s in files["demo_pretrain"].sources], files["demo_pretrain"].shares()))
    assert decay["wikipedia"] > pretrain["wikipedia"] and decay["wikipedia"] + decay["moby"] > 0.5
    for mixture in files.values():
        assert mixture.instances.mode == "pack"
        for s in mixture.sources:
            assert str(mixture.resolved_path(s)) == "runs/data/pretrain" and s.subset
            assert (
                Path(s.raw).name == f"{s.subset}.jsonl"
                and (shared_data / "pretrain" / Path(s.raw).name).exists()
            )


def test_paths_expand_environment_variables(monkeypatch):
    mixture = mixture_from_dict(
        {"name": "m", "sources": [{"name": "a", "path": "${X_DATA:-fallback}/a", "weight": 1}]}
    )
    monkeypatch.delenv("X_DATA", raising=False)
    assert str(mixture.resolved_path(mixture.sources[0])) == "fallback/a"
    monkeypatch.setenv("X_DATA", "/data")
    assert str(mixture.resolved_path(mixture.sources[0])) == "/data/a"
    bare = mixture_from_dict(
        {"name": "m", "sources": [{"name": "a", "path": "${NOT_SET_ANYWHERE}/a", "weight": 1}]}
    )
    with pytest.raises(MixtureError, match="NOT_SET_ANYWHERE"):
        bare.resolved_path(bare.sources[0])


BAD = [
    ("sources: []\n", "sources", "non-empty"),
    ("sources:\n  - {name: a, path: p}\n", "sources[0]", "exactly one of"),
    ("sources:\n  - {name: a, path: p, weight: -1}\n", "sources[0].weight", "positive"),
    ("sources:\n  - {name: a, path: p, weight: 1, percent: 2}\n", "sources[0]", "exactly one of"),
    (
        "sources:\n  - {name: a, path: p, weight: 1}\n  - {name: a, path: q, weight: 1}\n",
        "sources[1].name",
        "duplicate",
    ),
    (
        "sources:\n  - {name: a, path: p, weight: 1}\n  - {name: b, path: q, tokens: 5}\n",
        "sources[1].tokens",
        "one kind",
    ),
    ("sources:\n  - {name: a, path: p, weight: 1, colour: red}\n", "sources[0].colour", "unknown field"),
    ("sources:\n  - {name: a, weight: 1}\n", "sources[0]", "`path`"),
    (
        "sources:\n  - {name: a, path: p, tokens: 3.0e9}\n",
        "sources[0].tokens",
        "write 3.0e+9",
    ),  # YAML 1.1 string
    ("total_tokens: 0\nsources:\n  - {name: a, path: p, weight: 1}\n", "total_tokens", "positive"),
    ("srcs: []\n", "srcs", "unknown field"),
    ("instances: {mode: stream}\nsources:\n  - {name: a, path: p, weight: 1}\n", "instances", "mode"),
    ("instances: {min_len: half}\nsources:\n  - {name: a, path: p, weight: 1}\n", "instances.min_len", "int"),
    (
        "instances: {overlap: 3}\nsources:\n  - {name: a, path: p, weight: 1}\n",
        "instances.overlap",
        "unknown",
    ),
    ("- just a list\n", "mixture", "mapping"),
    ("sources: [\n", "", "not valid YAML"),
]


@pytest.mark.parametrize("text,field,message", BAD)
def test_bad_mixtures_name_the_file_line_and_field(tmp_path, text, field, message):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\n" + text)
    with pytest.raises(MixtureError) as err:
        load_mixture(path)
    assert str(err.value).startswith(str(path)) and field in str(err.value) and message in str(err.value)


def test_error_points_at_the_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: m\nsources:\n  - name: a\n    path: p\n    weight: 1\n  - name: b\n    path: q\n"
        "    weight: zero\n"
    )
    with pytest.raises(MixtureError, match=r"m\.yaml:8: sources\[1\]\.weight"):
        load_mixture(path)


def test_missing_file():
    with pytest.raises(MixtureError, match="not found"):
        load_mixture("/nonexistent/mixture.yaml")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), key=st.integers(0, 2**64 - 1))
def test_permute_is_a_bijection(n, key):
    image = permute(np.arange(n), n, key)
    assert np.array_equal(np.sort(image), np.arange(n))


def test_permute_depends_on_the_key_and_shuffles():
    a, b = permute(np.arange(1000), 1000, 1), permute(np.arange(1000), 1000, 2)
    assert not np.array_equal(a, b)
    assert abs(np.corrcoef(np.arange(1000), a.astype(float))[0, 1]) < 0.15


def plan(amounts, instances, tokens, kind="weight", total=None, seed=0):
    sources = [MixtureSource(name=f"s{i}", path="p", **{kind: a}) for i, a in enumerate(amounts)]
    return MixturePlan(Mixture("m", sources, total_tokens=total), instances, tokens, seed, "pretrain")


def test_draws_follow_token_shares_with_up_and_down_sampling():
    # s0: 100 instances of 10 tokens; s1: 1000 instances of 100 tokens. Equal token shares of 20,000 tokens.
    p = plan([1, 1], [100, 1000], [1000, 100_000], total=20_000)
    assert p.draws.tolist() == [1000, 100]  # s0 upsampled 10x, s1 downsampled to 10%
    src, inst = p.lookup(np.arange(p.total))
    assert np.bincount(src).tolist() == [1000, 100]
    s0 = inst[src == 0]
    # s0 is drawn 10 times: every instance exactly 10 times (ten permutations of its 100 instances)
    counts = np.bincount(s0, minlength=100)
    assert counts.min() == counts.max() == 10
    assert len(set(inst[src == 1].tolist())) == 100  # a subset without repeats
    with_tokens = plan([1000 * 10, 100 * 100], [100, 1000], [1000, 100_000], kind="tokens")
    assert with_tokens.draws.tolist() == [1000, 100]


def test_lookup_is_pure_and_positions_can_be_sought_anywhere():
    p = plan([3, 1, 1], [50, 70, 9], [500, 700, 90])
    everything = p.lookup(np.arange(3 * p.total))
    for start in (0, 17, p.total - 3, 2 * p.total + 5):
        part = p.lookup(np.arange(start, start + 9))
        assert np.array_equal(part[0], everything[0][start : start + 9])
        assert np.array_equal(part[1], everything[1][start : start + 9])
    # the second mixture epoch is another order and continues each source's draws
    first, second = everything[1][: p.total], everything[1][p.total : 2 * p.total]
    assert not np.array_equal(first, second)
    assert np.bincount(everything[0][p.total : 2 * p.total]).tolist() == p.draws.tolist()


def test_per_source_tables_give_the_walked_permutation(monkeypatch):
    """Small sources read their order from a cached table; it is the same order as walking the permutation."""
    import ettin.data.mixture as mixture

    args = ([3, 1, 1], [50, 70, 9], [500, 700, 90])
    positions = np.arange(0, 20 * plan(*args).total, 3)
    tabled = plan(*args)
    got = tabled.lookup(positions)
    assert tabled._tables  # the tables were used
    monkeypatch.setattr(mixture, "TABLE_MAX", 0)
    walked = plan(*args)
    want = walked.lookup(positions)
    assert not walked._tables and all(np.array_equal(a, b) for a, b in zip(got, want))
    monkeypatch.setattr(mixture, "TABLES_KEPT", 2)  # a bounded cache drops old tables and still agrees
    bounded = plan(*args)
    assert all(np.array_equal(a, b) for a, b in zip(bounded.lookup(positions), want)) and len(bounded._tables) <= 2


def test_seed_and_phase_change_the_order():
    base = plan([1, 1], [40, 40], [400, 400], seed=0).lookup(np.arange(80))
    other = plan([1, 1], [40, 40], [400, 400], seed=1).lookup(np.arange(80))
    assert not np.array_equal(np.stack(base), np.stack(other))


def test_a_source_without_instances_is_an_error():
    with pytest.raises(MixtureError, match="s1"):
        plan([1, 1], [5, 0], [50, 0])
