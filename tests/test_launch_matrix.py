"""The launch matrix (issue 32): every shipped recipe launched as the docs tell users to, on CPU ranks.

Rows: the six presets as encoder and as decoder, the twelve sized cross-objective recipes and the two tiny ones
(recipes/cross/), tiny, demo, demo-continue, and `ettin continue`'s recipe (from an encoder, from a decoder, and
with --mntp; written by its --dry-run). Columns, for every row:

  A  `torchrun --nproc_per_node 2 -m ettin.cli train RECIPE --out A` (gloo) with the recipe's own
     train.distributed, through every phase boundary (context and RoPE changes, per-objective values, init_from),
     a checkpoint in every phase (every step), the run's own final/ export;
  B  A as it stood at its first checkpoint (mid-phase, 2 ranks: a kill right after it), resumed (--resume) by
     one process (`ettin train`'s entry point in the test's own process): the same steps, tokens and learning
     rates as A, losses within fp32 / bf16 tolerance (dropout masks are keyed by row, not by rank);
  C  B as it stood at the first mid-phase checkpoint it wrote on its 1 rank, resumed on 2 ranks: the same again;
  X  `ettin export-hf C OUT`, loaded by transformers' AutoModelForMaskedLM / AutoModelForCausalLM: finite logits.

Shrunk by overrides only (`shrink`): model.size=tiny (demo keeps its own tiny shape) with a 16-token local window,
4 rows a step, contexts of 32 and 64 tokens (the recipe's shortest -> 32, any longer one -> 64), three steps in the
first phase and one in each later one, train.compile=false (CPU), no progress bar or TensorBoard; `ettin continue`'s
rows are shrunk by its own flags (--tokens, --seq-len, --batch-size) and keep every checkpoint. Data: the presets
and the sized cross recipes read their own published mixtures (recipes/data/ettin_*.yaml via ETTIN_DATA) over one
prepared copy of the ModernBERT-tokenized MDS shards of ../shared/data/mds (every source of every phase a link to
it); tiny, demo and their cross / continue rows make their own 4k tokenizer and shards (data.prepare) from a small
copy of ../shared/data/pretrain. Cross-objective starts: a tiny native run of the source objective and `ettin
convert-objective` of its last checkpoint, as the cross recipes' comments say; demo-continue starts from a demo
native's last checkpoint, as `ettin demo` does. The fast suite runs one row of each kind; `-m slow` runs them all.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from conftest import hub_tokenizer_cache
from ettin.train.checkpoint import list_checkpoints, read_meta

pytestmark = pytest.mark.dist

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ETTIN_SHARED_DATA", REPO.parent / "shared" / "data"))
ROWS = 4  # global batch: 2 rows a rank on 2 ranks, every preset's micro-batch clamps to it
SEQ_SHORT, SEQ_LONG = 32, 64
FILL = 0.8  # phase budgets: `steps` steps at any row fill in [FILL, 1] (real tokens, as the recipes count)
SIZES = ("17m", "32m", "68m", "150m", "400m", "1b")
ROLES = {"mlm": "encoder", "clm": "decoder"}


@dataclass(frozen=True)
class Row:
    recipe: str  # relative to the repository; "continue" for `ettin continue`'s recipe
    objective: str | None = None  # --objective (None: the recipe's own)
    data: str = "published"  # published (ETTIN_DATA) | demo (a data.prepare of ../shared/data/pretrain)
    extra: tuple[str, ...] = ()  # what the documented launch adds (seeds=1, train.mntp=true, --mntp)
    # the start: (native recipe, its objective, what of it: convert (convert-objective of its last checkpoint), ckpt
    # (its last checkpoint) or run (the run folder, as `ettin continue` takes it))
    start: tuple[str, str, str] | None = None


def _rows() -> dict[str, Row]:
    rows = {f"{s}-{ROLES[o]}": Row(f"recipes/{s}.yaml", o) for s in SIZES for o in ROLES}
    for path in sorted((REPO / "recipes" / "cross").glob("*-from-*.yaml")):
        objective = yaml.safe_load(path.read_text())["objective"]
        other = "clm" if objective == "mlm" else "mlm"
        tiny = path.stem.startswith("tiny-")
        rows[f"cross/{path.stem}"] = Row(str(path.relative_to(REPO)), None, "demo" if tiny else "published",
                                         start=("tiny" if tiny else "17m", other, "convert"))
    rows["tiny"] = Row("recipes/tiny.yaml", data="demo")
    rows["demo"] = Row("recipes/demo.yaml", "clm", "demo", ("seeds=1",))  # `ettin train` trains one seed
    # demo-continue as `ettin demo` runs its encoder-from-decoder-mntp model: a demo decoder's last checkpoint
    rows["demo-continue"] = Row("recipes/demo-continue.yaml", "mlm", "demo", ("train.mntp=true",),
                                ("demo", "clm", "ckpt"))
    rows["continue-encoder"] = Row("continue", data="demo", start=("tiny", "mlm", "run"))
    rows["continue-decoder"] = Row("continue", data="demo", start=("tiny", "clm", "run"))
    rows["continue-mntp"] = Row("continue", data="demo", extra=("--mntp",), start=("tiny", "clm", "run"))
    return rows


ROWS_ALL = _rows()
FAST = ("17m-decoder", "cross/tiny-decoder-from-encoder", "tiny", "continue-encoder")
# row -> the src/ bug that makes it fail (strict: the row fails again, as a reminder, once the bug is fixed)
XFAIL: dict[str, str] = {}  # row -> a known src/ bug (strict: the row fails once the bug is fixed)


def _param(name: str):
    marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
    return pytest.param(name, id=name, marks=marks)


# ---------------------------------------------------------------------------------------------------- launching


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", **extra)
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"):
        env.pop(key, None)
    return env


def _launch(nproc: int, args: list[str], env: dict[str, str]) -> str:
    """`torchrun --nproc_per_node N -m ettin.cli ARGS` (N > 1), or `python -m ettin.cli ARGS`; its output."""
    torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *torchrun, "-m", "ettin.cli", *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, f"$ {' '.join(cmd)}\n(exit {proc.returncode})\n{out[-6000:]}"
    return out


@contextlib.contextmanager
def _in_repo(**env: str):
    """In this process, as the commands run: from the repository, one thread, `env` set (HF_HUB_CACHE also where
    huggingface_hub, already imported, read it)."""
    import huggingface_hub.constants as hub

    cwd, threads, saved = os.getcwd(), torch.get_num_threads(), {k: os.environ.get(k) for k in env}
    hub_cache = hub.HF_HUB_CACHE
    os.chdir(REPO)
    os.environ.update(env)
    hub.HF_HUB_CACHE = env.get("HF_HUB_CACHE", hub_cache)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.chdir(cwd)
        hub.HF_HUB_CACHE = hub_cache
        torch.set_num_threads(threads)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _ettin(*args, **env: str) -> None:
    """An `ettin` command in this process (the same entry point as the command line, without its start-up)."""
    from ettin.cli import main

    with _in_repo(**env):
        assert main([str(a) for a in args]) == 0, args


def shrink(recipe: str, objective: str | None, extra: list[str], steps: tuple[int, int] = (3, 1)) -> list[str]:
    """The overrides that make a recipe CPU-sized, its phase structure kept: the shortest context -> 32 tokens, any
    longer one -> 64; `steps` steps in the first phase and in each later one (three: a checkpoint after each, two of
    them mid-phase); warmup and decay half a step each where the recipe has them; 4 rows a step; the tiny shape
    (demo keeps its own) with a 16-token local window; no compilation (CPU), progress bar or TensorBoard."""
    from ettin.train.recipe import load_recipe

    with _in_repo():
        r = load_recipe(recipe, extra)
    r = r.for_objective(objective or r.objective)
    shortest = min(p.seq_len for p in r.phases)
    over = [] if r.model.size in ("tiny", "demo") else ["model.size=tiny"]
    over += ["model.overrides.local_attention=16", f"train.global_batch_size={ROWS}", "train.compile=false",
             f"train.save_every_tokens={int(FILL * ROWS * SEQ_SHORT)}", "train.progress=false",
             "train.tensorboard=false"]
    for i, p in enumerate(r.phases):
        seq = SEQ_SHORT if p.seq_len == shortest else SEQ_LONG
        step = int(FILL * ROWS * seq)
        over += [f"phases.{i}.seq_len={seq}", f"phases.{i}.tokens={steps[min(i, 1)] * step}"]
        over += [f"phases.{i}.{k}={step // 2}" for k in ("warmup_tokens", "decay_tokens") if getattr(p, k)]
        over += [f"phases.{i}.global_batch_size={ROWS}"] if p.global_batch_size else []
    return over


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def published_data(tmp_path_factory) -> dict[str, str]:
    """ETTIN_DATA for the published mixtures: the MDS shards of ../shared/data/mds (ModernBERT ids, the published
    data's format) prepared once (`ettin data prepare --source mds:...`, as docs/real-sizes.md), every source
    folder of recipes/data/ettin_{pretrain,extension,decay}.yaml a link to it; HF_HUB_CACHE holding the presets'
    tokenizer (data.tokenizer: answerdotai/ModernBERT-base), as a cluster's shared cache would."""
    root = tmp_path_factory.mktemp("ettin-data")
    _ettin("data", "prepare", "--source", f"mds:{SHARED / 'mds' / 'tokens_uint32'}", "--out", root / "mds",
           "--workers", "0")
    for name in ("pretrain", "extension", "decay"):
        for source in yaml.safe_load((REPO / f"recipes/data/ettin_{name}.yaml").read_text())["sources"]:
            link = Path(source["path"].replace("${ETTIN_DATA:-data/ettin}", str(root)))
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(root / "mds", target_is_directory=True)
    hub_tokenizer_cache(root / "hf-hub")  # the presets name the tokenizer by hub id: a filled cache, offline
    return {"ETTIN_DATA": str(root), "HF_HUB_CACHE": str(root / "hf-hub")}


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> list[str]:
    """recipes/tiny.yaml's data set-up (data.prepare: a 4k-token BPE, then shards, demo_*.yaml mixtures) on a small
    copy of ../shared/data/pretrain (the first 40 documents of each file, at most 4,000 characters each), made
    once; the overrides that point a tiny/demo recipe at it."""
    root = tmp_path_factory.mktemp("demo-data")
    sources = []
    for path in sorted((SHARED / "pretrain").glob("*.jsonl")):
        with open(path) as f:
            docs = [json.loads(line) for line in itertools.islice(f, 40)]
        (root / path.name).write_text("".join(json.dumps({"text": d["text"][:4000]}) + "\n" for d in docs))
        sources.append(str(root / path.name))
    over = [f"data.tokenizer={root / 'tokenizer-4k' / 'tokenizer.json'}", f"data.prepare.out={root / 'pretrain-4k'}",
            f"data.vars.ETTIN_DEMO_DATA={root / 'pretrain-4k'}", f"data.prepare.sources=[{', '.join(sources)}]"]
    from ettin.data.ready import ensure_data
    from ettin.train.recipe import load_recipe

    with _in_repo():
        ensure_data(load_recipe("recipes/tiny.yaml", over), log=lambda *_: None)
    return over


@pytest.fixture(scope="session")
def natives(tmp_path_factory):
    """Tiny native runs, made on first use and shared: native(kind, objective, data) with kind "17m" | "tiny" |
    "demo" (the recipe), `data` its (overrides, environment) -> the run folder (one process, a step a phase,
    through every phase of the recipe)."""
    made: dict[tuple[str, str], Path] = {}

    def native(kind: str, objective: str, data: tuple[list[str], dict[str, str]]) -> Path:
        if (kind, objective) not in made:
            recipe = f"recipes/{kind}.yaml"
            extra = [*data[0], *(["seeds=1"] if kind == "demo" else [])]
            out = tmp_path_factory.mktemp(f"native-{kind}-{objective}")
            _ettin("train", recipe, "--objective", objective, "--out", out, *extra,
                   *shrink(recipe, objective, extra, (1, 1)), **data[1])
            made[kind, objective] = out
        return made[kind, objective]

    return native


def _data(request, kind: str) -> tuple[list[str], dict[str, str]]:
    """(overrides, environment) of a data kind: published (ETTIN_DATA) or demo (data.prepare)."""
    if kind == "published":
        return [], request.getfixturevalue("published_data")
    return request.getfixturevalue("demo_data"), {}


# ---------------------------------------------------------------------------------------------------- checks


def _metrics(run: Path) -> dict[tuple[str, int], dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {(r["phase"], r["step"]): r for r in rows}


def _copy_at(run: Path, to: Path, checkpoint: Path) -> Path:
    """The run folder as it stood when `checkpoint` was written (a kill right after it): the later checkpoints, the
    metrics and the exported final model removed."""
    shutil.copytree(run, to, symlinks=True)
    names = [p.name for p in list_checkpoints(run)]
    for path in list_checkpoints(to):
        if names.index(path.name) > names.index(checkpoint.name):
            shutil.rmtree(path)
    (to / "metrics.jsonl").unlink()
    shutil.rmtree(to / "final", ignore_errors=True)
    return to


def _same_steps(resumed: Path, reference: Path, after: Path, rel: float) -> None:
    """`resumed` continued from `after` (its history says so) and logged the reference run's steps after that
    checkpoint with the same tokens and learning rates (a pure function of the step and the schedule) and losses
    within `rel`."""
    event = json.loads((resumed / "history.jsonl").read_text().splitlines()[-1])
    assert (event["event"], event["from_checkpoint"]) == ("resume", after.name), event
    meta = read_meta(after)
    ref = _metrics(reference)
    order = list(ref)
    first = order.index((meta["phase"], meta["step"])) + 1
    got = _metrics(resumed)
    assert list(got) == order[first:], (list(got), order[first:])
    for key, row in got.items():
        for field in ("tokens", "phase_tokens", "lr"):
            assert row[field] == ref[key][field], (key, field, row[field], ref[key][field])
        assert math.isfinite(row["loss"]) and row["loss"] == pytest.approx(ref[key]["loss"], rel=rel), key


def _check_run(run: Path, recipe, file_values: dict, init_from: str | None) -> None:
    """Every phase trained in order with finite losses and checkpointed, each with its own context (rows longer than
    the short context where it grew), RoPE thetas (`file_values`: what the recipe file itself sets for this
    objective, {(phase, key): value}, checked independently of the recipe loader) and masking rate; the start
    recorded; the run's own final/ export."""
    rows = _metrics(run)
    assert [p.name for p in recipe.phases] == list(dict.fromkeys(phase for phase, _ in rows))
    assert all(math.isfinite(r["loss"]) for r in rows.values())
    stored = yaml.safe_load((run / "recipe.yaml").read_text())
    objective, mask = recipe.objective, recipe.objective == "mlm"
    assert stored["objective"] == objective
    before = 0
    for i, phase in enumerate(recipe.phases):
        ckpts = [c for c in list_checkpoints(run) if read_meta(c)["phase"] == phase.name]
        assert ckpts, f"no checkpoint in phase {phase.name}"
        meta = read_meta(ckpts[-1])
        assert meta["phase_tokens"] >= meta["phase_budget"] == phase.tokens
        config = meta["model_config"]
        assert config["objective"] == objective and config["max_position_embeddings"] >= phase.seq_len
        assert (config["global_rope_theta"], config["local_rope_theta"]) == (
            phase.global_rope_theta, phase.local_rope_theta), phase.name
        for (name, key), value in file_values.items():
            assert name != phase.name or config[key] == value, (phase.name, key, config[key], value)
        assert stored["phases"][i]["local_rope_theta"] == phase.local_rope_theta  # plain values, resolved
        steps = [r for (name, _), r in rows.items() if name == phase.name]  # every step logs (each saves)
        sizes = [r["tokens"] - t for r, t in zip(steps, [before] + [r["tokens"] for r in steps])]
        before = steps[-1]["tokens"]
        assert max(sizes) <= ROWS * phase.seq_len and (phase.seq_len == SEQ_SHORT or max(sizes) > ROWS * SEQ_SHORT)
        predicted = sum(r["predicted"] for r in steps) / sum(sizes)  # masked share (mlm, mntp) or ~all (clm)
        assert abs(predicted - phase.mlm_probability) < 0.1 if mask else predicted > 0.8, (phase.name, predicted)
    start = json.loads((run / "history.jsonl").read_text().splitlines()[0])
    if init_from is None:
        assert start["init_from"] is None
    else:
        assert Path(start["init_from"]["path"]).resolve() == Path(init_from).resolve()
        assert meta["init_from"] is not None
    assert (run / "final" / "config.json").is_file()


def _file_values(recipe: str, objective: str) -> dict[tuple[str, str], object]:
    """The per-objective values a recipe file sets itself (`phases.decay.local_rope_theta: {mlm: .., clm: ..}`), for
    `objective`: {(phase, key): value}."""
    from ettin.train.recipe_values import PerObjective, RecipeLoader

    raw = yaml.load((REPO / recipe).read_text(), Loader=RecipeLoader) if recipe != "continue" else {}
    return {tuple(k.split(".")[1:]): v.values[objective] for k, v in raw.items()
            if k.startswith("phases.") and isinstance(v, PerObjective) and objective in v.values}


def _check_transformers(folder: Path, objective: str) -> None:
    """The exported folder loads in transformers (the class for its objective) and a forward pass of its own
    tokenizer's ids gives finite logits over the whole vocabulary."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    auto = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    model = auto.from_pretrained(folder).eval()
    ids = AutoTokenizer.from_pretrained(folder)("The ship sailed across the sea.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape[:2] == ids["input_ids"].shape and logits.shape[-1] == model.config.vocab_size
    assert torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------------------- the matrix


def _start(natives, request, row: Row, tmp: Path) -> str | None:
    """The model a row starts from, made as the docs say (None: a fresh initialisation)."""
    if row.start is None:
        return None
    kind, objective, how = row.start
    run = natives(kind, objective, _data(request, "published" if kind == "17m" else "demo"))
    if how == "run":
        return str(run)
    last = list_checkpoints(run)[-1]
    if how == "ckpt":
        return str(last)
    init = tmp / "init"
    _ettin("convert-objective", last, "--to", "mlm" if objective == "clm" else "clm", "--out", init)
    return str(init)


def _continue_recipe(row: Row, start: str, tmp: Path) -> tuple[str, list[str]]:
    """`ettin continue START --data notes.jsonl ... --out DIR --dry-run`: the recipe it would train (printed
    first), saved as a file; the notes are 30 Wikipedia summaries that the start model did not train on."""
    notes = tmp / "notes.jsonl"
    with open(SHARED / "pretrain" / "wikipedia_vital_summaries_en.jsonl") as f:
        notes.write_text("".join(itertools.islice(f, 100, 130)))
    args = ["continue", start, "--data", notes, "--tokens", 3 * int(FILL * ROWS * SEQ_SHORT), "--seq-len",
            SEQ_SHORT, "--batch-size", ROWS, "--out", tmp / "continued", *row.extra]
    out = _launch(1, [*args, "--dry-run"], _env())
    recipe = tmp / "continue.yaml"
    recipe.write_text(out.split("\nout: ", 1)[0])
    # every checkpoint kept (the plan keeps 2): the 1 -> 2 rank resume needs one written on 1 rank mid-phase
    return str(recipe), ["train.keep_checkpoints=0", "train.progress=false", "train.tensorboard=false"]


def _matrix_cell(name: str, natives, request, tmp_path: Path) -> None:
    from ettin.train.recipe import load_recipe

    row = ROWS_ALL[name]
    data, data_env = _data(request, row.data)
    env = _env(**data_env)
    start = _start(natives, request, row, tmp_path)
    if row.recipe == "continue":
        recipe, over = _continue_recipe(row, start, tmp_path)
        init_from = str(list_checkpoints(start)[-1])
    else:
        recipe, init_from = row.recipe, start
        extra = [*data, *row.extra, *([f"model.init_from={start}"] if start else [])]
        over = [*extra, *shrink(recipe, row.objective, extra)]
    objective_flag = ["--objective", row.objective] if row.objective else []

    # A: two ranks from the start, the recipe's own parallelism
    a = tmp_path / "a"
    out = _launch(2, ["train", recipe, "--out", a, *objective_flag, *over], env)
    with _in_repo(**data_env):
        resolved = load_recipe(recipe, over)
    resolved = resolved.for_objective(row.objective or resolved.objective)
    banner = "FSDP2 (sharded weights)" if resolved.train.distributed == "fsdp" else "DDP (replicated weights)"
    assert f"training on 2 ranks (gloo, cpu): {banner}" in out, out[-3000:]
    _check_run(a, resolved, _file_values(row.recipe, resolved.objective), init_from)
    assert all(read_meta(c)["world_size"] == 2 for c in list_checkpoints(a))
    # dropout masks are keyed by the global row, so 1 and 2 ranks agree but for the order of sums (and bf16's)
    rel = 2e-3 if resolved.train.precision == "bf16" else 1e-5

    # B: killed after its first checkpoint (mid-phase, 2 ranks), resumed by one process (`ettin train ... --resume`,
    # run in this process: the same entry point without the start-up)
    c1 = list_checkpoints(a)[0]
    assert read_meta(c1)["phase_tokens"] < read_meta(c1)["phase_budget"], "the first checkpoint ends its phase"
    b = _copy_at(a, tmp_path / "b", c1)
    _ettin("train", recipe, "--out", b, *objective_flag, *over, "--resume", **data_env)
    _same_steps(b, a, c1, rel)

    # C: B killed after the first mid-phase checkpoint it wrote on its one rank, resumed on two
    c2 = next(c for c in list_checkpoints(b) if read_meta(c)["world_size"] == 1
              and read_meta(c)["phase_tokens"] < read_meta(c)["phase_budget"])
    c = _copy_at(b, tmp_path / "c", c2)
    _launch(2, ["train", recipe, "--out", c, *objective_flag, *over, "--resume"], env)
    _same_steps(c, a, c2, rel)

    # X: the export of the finished run loads in transformers
    _ettin("export-hf", c, tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    _check_transformers(tmp_path / "hf", resolved.objective)
    for run in (a, b, c):  # the checkpoints are large (a 50k vocabulary): keep the session's disk small
        shutil.rmtree(run / "checkpoints")


@pytest.mark.parametrize("name", [_param(n) for n in FAST])
def test_launch_matrix_fast(name, natives, request, tmp_path):
    """One row of each kind (a preset, a cross-objective recipe, the tiny recipe, `ettin continue`'s recipe) through
    the whole matrix: a 2-rank start, a 2 -> 1 and a 1 -> 2 rank resume from mid-phase checkpoints, the export in
    transformers."""
    _matrix_cell(name, natives, request, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [_param(n) for n in ROWS_ALL])
def test_launch_matrix(name, natives, request, tmp_path):
    """Every shipped recipe (and `ettin continue`'s three variants) through the same matrix."""
    _matrix_cell(name, natives, request, tmp_path)


def test_the_matrix_covers_every_shipped_recipe():
    """Every recipe file is a row (a new recipe cannot be forgotten here); the presets as both objectives."""
    shipped = {str(p.relative_to(REPO)) for p in (REPO / "recipes").rglob("*.yaml")
               if "data" not in p.parts and not p.name.startswith("_")}
    assert shipped == {r.recipe for r in ROWS_ALL.values() if r.recipe != "continue"}
    assert {(r.recipe, r.objective) for r in ROWS_ALL.values() if "/cross/" not in r.recipe} >= {
        (f"recipes/{s}.yaml", o) for s in SIZES for o in ROLES}
    assert set(FAST) < set(ROWS_ALL)
