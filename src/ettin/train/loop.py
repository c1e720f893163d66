"""The training loop: phases in order, each starting from the previous phase's final checkpoint.

Everything happens visibly here: build the model for the phase (its RoPE thetas and context come
from the phase), wrap it (DDP / FSDP2 / compile), load the starting state, then for each step:
fetch the global batch's slice for this rank, accumulate gradients over micro-batches, check the
loss, set the LR, step the optimizer, log, checkpoint. No callbacks. Read in the order a run happens: the plan
(`ettin.train.plan`), the inputs checked (`ettin.train.preflight`), the data made ready (`ettin.data.ready`), the
model built (`ettin.train.build`), where a resume starts (`ettin.train.resume`), then each step (`ettin.train.step`).

The loss of a step is the mean cross-entropy over every predicted token of the global batch: each
micro-batch's mean is weighted by its share of the global count of predicted tokens (all-reduced
first), so gradient accumulation and the number of ranks do not change the numbers.

Budgets (ettin.train.plan): a phase ends at the first step whose cumulative tokens reach its budget, counted in
real tokens as the published trainer counted them. A step's real tokens are `source.global_tokens(step)`, the
positions its rows fill as the encoder frames them ([CLS] content [SEP]: the attention mask's sum), read from the
instance index: the same number for the decoder (whose row of a document cut short ends without [SEP]), so both
models of a pair take the same steps over the same batches, and no rank has to wait for a count. The background
workers that build the batches count them (`ettin.data.loader.step_batches`).

Resume: `--resume` restarts from the newest complete checkpoint with model, optimizer, schedule
position, data position (the loader is a pure function of the step) and RNG states, and reproduces
the uninterrupted run's per-step losses bitwise on CPU in fp32.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ettin.data.collate import dropout_keys
from ettin.data.loader import step_batches
from ettin.data.ready import RecipeData, ensure_data
from ettin.io import atomic_write_json, read_json
from ettin.runtime import Runtime
from ettin.train import checkpoint as ckpt
from ettin.train import distributed as D
from ettin.train import runlock
from ettin.train.build import build_model, data_workers, runtime_line
from ettin.train.guard import LossSpike, SpikeGuard, TrainingStopped
from ettin.train.optim import build_optimizer
from ettin.train.plan import Plan, make_plan, measured_fill
from ettin.train.preflight import check_inputs
from ettin.train.progress import Progress, guess_peak_flops, plot_loss_curve, step_flops
from ettin.train.recipe import Recipe, RecipeError
from ettin.train.resume import prepare_run_dir, resume_point
from ettin.train.step import StepWindow, grad_norm, micro_counts, set_lr, train_step

# The batch-order fingerprint covers the first steps of a phase (all of them in CPU-sized runs): hashing the
# order of a 1.7T-token phase would take minutes at start-up, and the order is a pure function of the
# (seed, phase, mixture, sizes) that the fingerprint's header already covers.
FINGERPRINT_STEPS = 20_000


class NonFiniteLoss(TrainingStopped):
    """The loss became NaN or infinite (and the recipe says stop)."""


@dataclass
class PhaseResult:
    phase: str
    steps: int
    first_loss: float
    last_loss: float
    checkpoint: str
    fingerprint: str
    losses: list[float] = field(default_factory=list)
    skipped: int = 0


# ------------------------------------------------------------------------------------------ train


def train(
    recipe: Recipe,
    run_dir: str | Path,
    objective: str | None = None,
    resume: bool = False,
    log=print,
) -> list[PhaseResult]:
    """Train every phase of a recipe into run_dir (works under torchrun). Returns one result per phase run."""
    objective = objective or recipe.objective
    run_dir = Path(run_dir)
    info = D.setup()
    plan = make_plan(recipe, objective, info.world_size)  # every phase's batch split checked before any work
    recipe = plan.recipe  # its per-objective values resolved for this objective
    check_inputs(recipe)  # every file the recipe names exists, before any long work
    runlock.watch_launcher()  # under torchrun: this rank stops if its launcher dies
    with _one_writer(run_dir, info, log):  # a second live run into run_dir is refused, naming the holder
        return _train(plan, recipe, objective, run_dir, info, resume, log)


@contextlib.contextmanager
def _one_writer(run_dir: Path, info: D.DistInfo, log):
    """The main rank holds the run folder's lock (ettin.train.runlock) for the whole run; every rank learns
    whether it got it, so a refusal stops all of them with the same message."""
    with contextlib.ExitStack() as stack:
        refusal = None
        if info.is_main:
            try:
                stack.enter_context(runlock.hold(run_dir, log=log))
            except runlock.RunLocked as e:
                refusal = str(e)
        if info.active:
            box = [refusal]
            dist.broadcast_object_list(box, src=0)
            refusal = box[0]
        if refusal:
            raise runlock.RunLocked(refusal)
        yield


def _train(plan: Plan, recipe: Recipe, objective: str, run_dir: Path, info: D.DistInfo, resume: bool,
           log) -> list[PhaseResult]:
    if recipe.train.cpu_threads and info.device.type == "cpu":
        torch.set_num_threads(recipe.train.cpu_threads)
    if info.is_main:
        log(runtime_line(recipe, info))
        ensure_data(recipe, log=log)
    if info.active:
        dist.barrier()
    data = RecipeData.open(recipe)
    if info.is_main:
        prepare_run_dir(run_dir, recipe, objective, data.tokenizer, resume)  # refuses a resume that would lie
    if info.active:
        dist.barrier()
    start, start_ckpt, mid_phase = resume_point(plan, run_dir) if resume else (0, None, False)
    if start_ckpt is not None and info.is_main:
        log(f"resuming from {start_ckpt}")
    results = []
    wandb_run = _wandb(recipe, run_dir, objective, info)
    for index in range(start, len(recipe.phases)):
        init = start_ckpt if index == start else ckpt.latest_checkpoint(run_dir)
        results.append(train_phase(plan, index, run_dir, info, data, init, mid_phase and index == start, wandb_run))
    if wandb_run is not None:
        wandb_run.finish()
    if results and info.is_main:
        final = Path(results[-1].checkpoint)
        ckpt.export_hf(final, run_dir / "final")
        plot_loss_curve(run_dir, run_dir / "loss_curve.png", title=f"{recipe.name} ({objective})")
    return results


def train_phase(
    plan: Plan,
    index: int,
    run_dir: Path,
    info: D.DistInfo,
    data: RecipeData,
    init: Path | None,
    resume: bool,
    wandb_run: Any = None,
) -> PhaseResult:
    recipe, objective, pp = plan.recipe, plan.objective, plan.phases[index]
    phase = recipe.phases[index]
    t = recipe.train
    config = recipe.model_config(phase, data.vocab_size, objective, data.special_ids)
    mode = D.strategy(t.distributed, info.world_size)
    model, wrapped = build_model(config, info, mode, t.meta_init, recipe.seed, t.precision,
                                 t.activation_checkpointing, Runtime(t.attn_backend, t.loss_chunk_size))
    optimizer = build_optimizer(model, t)
    schedule = pp.schedule
    step, tokens, position = 0, 0, 0  # steps and budget position in this phase; real tokens of the whole run
    history = None  # the loss-spike guard's window (a phase's own; restored on a mid-phase resume)
    if resume:
        meta = ckpt.load_checkpoint(init, model, optimizer, restore_rng=True)
        step, tokens, history = meta["step"], meta["tokens"], meta.get("spike_window")
        if "phase_tokens" not in meta and pp.token_unit == "real":
            raise RecipeError(
                f"{init}: written before real-token budgets (its meta has no phase_tokens), so how far phase "
                f"{phase.name} got in real tokens is unknown and its schedule cannot continue exactly; start a new run "
                f"from it in another --out with model.init_from={init}")
        position = meta.get("phase_tokens", step * pp.slots_per_step)
    elif init is not None:  # the previous phase's final checkpoint (or a cross-objective start)
        keep_optimizer = not phase.reset_optimizer and ckpt.read_meta(init).get("has_optimizer", True)
        meta = ckpt.load_checkpoint(init, model, optimizer if keep_optimizer else None)
        tokens = meta.get("tokens", 0) if meta.get("run_objective") == objective else 0
    elif recipe.model.init_from:
        try:
            ckpt.load_initial_weights(recipe.model.init_from, model)
        except ValueError as e:
            raise RecipeError(str(e)) from None
    if t.compile:  # per block, after wrapping/sharding (as torchtitan); layout and fused loss stay eager
        model.compile_blocks()
    source = data.phase_loader(phase, objective, info.rank, info.world_size)
    fill = measured_fill(source, pp) if pp.token_unit == "real" else 1.0
    expected = pp.expected_steps(fill)
    fingerprint_steps = min(expected, FINGERPRINT_STEPS)
    fingerprint = source.fingerprint(fingerprint_steps)
    peak = t.peak_flops or guess_peak_flops(info.device)
    progress = Progress(run_dir, phase.name, pp.tokens, position, enabled=info.is_main, bar=t.progress,
                        tensorboard=t.tensorboard, wandb_run=wandb_run, peak_flops=peak, devices=info.world_size,
                        later_tokens=sum(p.tokens for p in plan.phases[index + 1:]), unit=pp.token_unit)
    progress.note(f"phase {phase.name}: {pp.tokens:,} {pp.token_unit} tokens, from {position:,} (about "
                  f"{expected:,} steps of {pp.global_batch} x {pp.seq_len}: the data fills {fill:.1%} of each row; "
                  f"{info.world_size} rank(s) x micro-batch {pp.micro_batch} x {pp.accumulation} accumulation); "
                  f"model {recipe.model.size} {objective} ({model.num_parameters() / 1e6:.2f}M params, "
                  f"rope {phase.global_rope_theta:g}/{phase.local_rope_theta:g}, seq {phase.seq_len}); "
                  f"data order fingerprint {fingerprint}")
    _write_fingerprint(run_dir, phase.name, fingerprint, fingerprint_steps, info)
    losses: list[float] = []
    skipped = 0
    guard = SpikeGuard(t.spike_window, t.spike_sigmas, history) if t.spike_guard != "off" else None
    window = StepWindow()
    last_ckpt = init
    workers = data_workers(t.data_workers, info)
    batches = step_batches(source, step, workers=workers, pin_memory=info.device.type == "cuda",
                           log=progress.note)  # a /dev/shm fallback says so in the run's log
    try:
        while position < pp.tokens:
            waited = time.perf_counter()
            batch, n_tokens = next(batches)  # built ahead by `workers` background processes
            window.wait += time.perf_counter() - waited
            counts = micro_counts(batch["labels"], batch.get("attention_mask"), pp.micro_batch)  # on the host
            batch = {k: v.to(info.device, non_blocking=True).long() for k, v in batch.items()}  # int32 views
            # each row's dropout key: the same masks on any number of ranks, in any micro-batch (ettin.dropout)
            rows = source.rank_rows(step)
            batch["dropout_keys"] = dropout_keys(recipe.seed, phase.name, step, rows).to(info.device)
            loss, n_predicted = train_step(wrapped, batch, counts, pp.micro_batch, t.precision, mode, info)
            norm = grad_norm(model)  # a device scalar, read back with the window's losses (log_grad_norm)
            lr = t.lr * schedule.factor(position)  # the LR of a step: a function of the tokens before it
            skip = None
            if t.nan_policy == "skip" or t.spike_guard == "skip":  # skipping needs the answer now: a sync
                value = float(loss)
                if t.nan_policy == "skip" and not math.isfinite(value):
                    skip = f"non-finite loss ({value})"
                elif t.spike_guard == "skip" and guard.check(value):
                    skip = f"loss spike ({guard.describe(value)})"
            if skip:
                optimizer.zero_grad(set_to_none=True)
                progress.note(f"{skip} at phase {phase.name} step {step} (tokens {tokens:,}): batch skipped")
                skipped += 1
            else:  # stop policies: checked without a sync, at the next log step or checkpoint
                set_lr(optimizer, lr)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            before = position
            step += 1
            position += pp.step_tokens(n_tokens)
            tokens += n_tokens
            window.add(step, loss, n_predicted, n_tokens, norm)
            done = position >= pp.tokens
            save = pp.saves_between(before, position)
            if step % t.log_every == 0 or done or save:
                values, predicted, norms = window.read()  # the only device-to-host sync of the window's steps
                bad = [(k, x) for k, x in zip(window.steps, values) if not math.isfinite(x)]
                if bad and t.nan_policy == "stop":
                    progress.close()
                    raise NonFiniteLoss(f"non-finite loss ({bad[0][1]}) at phase {phase.name} step {bad[0][0] - 1}; "
                                        "set train.nan_policy=skip to skip such batches")
                if t.spike_guard == "stop":
                    for k, x in zip(window.steps, values):
                        if guard.check(x):
                            progress.close()
                            raise LossSpike(
                                f"loss spike at phase {phase.name} step {k - 1} (tokens {tokens:,}): "
                                f"{guard.describe(x)}; the run stopped before checkpointing after it. Resume "
                                "(--resume) with train.spike_guard=skip to skip such steps, or inspect the batch "
                                "(`ettin data` shows a step's rows)")
                losses += values
                finite = [x for x in values if math.isfinite(x)]
                flops = step_flops(config, window.tokens, predicted, phase.seq_len)
                record = {"phase": phase.name, "step": step, "tokens": tokens, "phase_tokens": position,
                          "loss": values[-1], "loss_avg": sum(finite) / len(finite) if finite else math.nan,
                          "lr": lr, "grad_norm": norms[-1], "predicted": predicted, "data_wait": window.wait}
                progress.log(position, record, flops, window.tokens)
                window = StepWindow()
            if save:
                meta = {"run": run_dir.name, "run_objective": objective, "phase": phase.name, "phase_index": index,
                        "step": step, "phase_tokens": position, "phase_budget": pp.tokens,
                        "token_unit": pp.token_unit, "tokens": tokens, "model_config": config.to_dict(),
                        "init_from": ckpt.describe_start(recipe.model.init_from),
                        "scheduler": {**schedule.__dict__, "position": position},
                        "data_position": {"phase": phase.name, "next_step": step, "seed": recipe.seed,
                                          "fingerprint": fingerprint},
                        "world_size": info.world_size, "has_optimizer": True, "time": time.time()}
                if guard is not None:
                    meta["spike_window"] = guard.state()
                last_ckpt = ckpt.save_checkpoint(run_dir, ckpt.checkpoint_name(phase.name, step), model,
                                                 optimizer, meta, keep=t.keep_checkpoints)
    finally:
        batches.close()  # stops the background workers
    progress.close()
    if info.is_main:
        plot_loss_curve(run_dir, run_dir / f"loss_curve-{phase.name}.png", title=f"{recipe.name} {phase.name}")
    first = losses[0] if losses else math.nan
    return PhaseResult(phase.name, step, first, losses[-1] if losses else math.nan, str(last_ckpt),
                       fingerprint, losses, skipped)


def _write_fingerprint(run_dir: Path, phase: str, fingerprint: str, steps: int, info: D.DistInfo) -> None:
    if not info.is_main:
        return
    path = run_dir / "fingerprints.json"
    data = read_json(path) if path.is_file() else {}
    data[phase] = {"fingerprint": fingerprint, "steps": steps}
    atomic_write_json(path, data)


def _wandb(recipe: Recipe, run_dir: Path, objective: str, info: D.DistInfo) -> Any:
    if not recipe.train.wandb or not info.is_main:
        return None
    try:
        import wandb
    except ImportError:
        raise RecipeError(f"{recipe.source_file}: train.wandb: wandb is not installed (pip install ettin[wandb])") from None
    return wandb.init(project="ettin", name=f"{recipe.name}-{objective}", dir=str(run_dir),
                      config=recipe.to_dict(), resume="allow")
