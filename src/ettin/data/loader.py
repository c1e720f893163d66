"""One batch order for both models: `PhaseLoader.batch(step)` is a pure function of (seed, phase, step).

    loader = PhaseLoader(mixture, tokenizer_info, seq_len, global_batch_size, seed, phase, objective,
                         rank=0, world_size=1, mlm_probability=0.3)
    batch = loader.batch(step)      # this rank's rows: input_ids, labels, attention_mask[, position_ids]
    loader.fingerprint(num_steps)   # sha256 of the global order of the first num_steps batches
    for batch, real_tokens in step_batches(loader, start_step, workers=2): ...   # built ahead; int32 views

How the order is made (see `ettin.data.mixture`): global batch `step` holds phase positions
[start(step), start(step) + size(step)); a position maps to (source, instance) through keyed
permutations, in O(1) time and memory. Nothing here reads the objective, the rank, the world size or
the number of workers, so the encoder and the decoder (and a 1-GPU and an 8-GPU run) get the same
instances in the same batches, and a run resumes at any step by calling batch(step): no replay.

Distributed: rank r of w takes rows r, r + w, r + 2w, ... of the global batch and reads only those
instances; the ranks together hold exactly the global batch (training refuses a w that does not divide it,
`ettin.train.plan`: ranks with different numbers of micro-batches would wait on each other). Masking randomness
is keyed per global row, so it does not depend on w either.

Batch-size warmup (optional, `BatchWarmup`): the global batch grows linearly in *tokens* from `start`
rows to the full batch over `tokens` tokens (the reference ramps from the device microbatch over e.g.
125B tokens), sizes rounded down to a multiple of `multiple`. Tokens are counted as seq_len per row, so
the schedule, and the order, remain a pure function of the step: sizes are precomputed once up to
the end of the ramp, start(step) is a lookup (or arithmetic after the ramp).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ettin.data.collate import OBJECTIVES, SpecialTokens, collate, frame, row_keys
from ettin.data.instances import InstanceConfig, InstanceIndex, load_or_build_index
from ettin.data.mixture import Mixture, MixtureError, MixturePlan, load_mixture, mixture_from_dict

SHM = "/dev/shm"  # where a worker's batches live (torch's shared memory); Docker gives a container 64 MB by default
SHM_SHARE = 0.5  # the share of its free space the batch rings of a host's ranks fill at most (the rest: NCCL, others)


@dataclass(frozen=True)
class BatchWarmup:
    start: int  # global rows at step 0
    tokens: float  # tokens (seq_len per row) over which the size ramps to the full batch
    multiple: int = 1  # sizes are multiples of this (e.g. the world size times the microbatch)


class BatchSchedule:
    """Global batch size per step and the phase position where each step starts."""

    def __init__(self, global_batch_size: int, seq_len: int, warmup: BatchWarmup | None = None):
        if global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
        self.full = global_batch_size
        sizes: list[int] = []
        if warmup is not None and warmup.tokens > 0 and warmup.start < global_batch_size:
            if warmup.start < 1 or warmup.multiple < 1:
                raise ValueError(f"batch warmup: start and multiple must be >= 1 ({warmup})")
            consumed = 0
            while True:
                frac = consumed * seq_len / warmup.tokens
                size = warmup.start + (global_batch_size - warmup.start) * min(frac, 1.0)
                size = max(warmup.start, int(size) // warmup.multiple * warmup.multiple)
                if size >= global_batch_size:
                    break
                sizes.append(size)
                consumed += size
        self.ramp_sizes = np.asarray(sizes, dtype=np.int64)  # (W,) sizes of the warmup steps
        self.ramp_starts = np.concatenate([[0], np.cumsum(self.ramp_sizes)]).astype(np.int64)  # (W + 1,)

    def size(self, step: int) -> int:
        return int(self.ramp_sizes[step]) if step < len(self.ramp_sizes) else self.full

    def start(self, step: int) -> int:
        w = len(self.ramp_sizes)
        return int(self.ramp_starts[step]) if step <= w else int(self.ramp_starts[w]) + (step - w) * self.full


class PhaseLoader:
    """Batches of one training phase for one rank. See the module docstring for the guarantees."""

    def __init__(
        self,
        mixture: Mixture | str | Path | dict,
        tokenizer_info: object,
        seq_len: int,
        global_batch_size: int,
        seed: int,
        phase: str,
        objective: str,
        rank: int = 0,
        world_size: int = 1,
        mlm_probability: float = 0.3,
        instances: InstanceConfig | str | None = None,
        batch_warmup: BatchWarmup | None = None,
        cache_dir: str | Path | None = None,
        datasets: dict[str, object] | None = None,
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self._args = dict(
            mixture=mixture,
            tokenizer_info=tokenizer_info,
            seq_len=seq_len,
            global_batch_size=global_batch_size,
            seed=seed,
            phase=phase,
            objective=objective,
            rank=rank,
            world_size=world_size,
            mlm_probability=mlm_probability,
            instances=instances,
            batch_warmup=batch_warmup,
            cache_dir=cache_dir,
            datasets=datasets,
        )
        if isinstance(mixture, (str, Path)):
            mixture = load_mixture(mixture)
        elif isinstance(mixture, dict):
            mixture = mixture_from_dict(mixture)
        self.mixture = mixture
        self.special = SpecialTokens.coerce(tokenizer_info)
        self._pool = self.special.replacement_ids()
        self.seq_len, self.seed, self.phase, self.objective = seq_len, seed, phase, objective
        self.rank, self.world_size, self.mlm_probability = rank, world_size, mlm_probability
        if instances is None:  # the mixture's choice, else Ettin's chunking
            instances = mixture.instances or InstanceConfig()
        self.instance_config = InstanceConfig(mode=instances) if isinstance(instances, str) else instances
        self.packed = self.instance_config.mode == "pack"
        self.schedule = BatchSchedule(global_batch_size, seq_len, batch_warmup)
        if min(self.schedule.size(0), global_batch_size) < world_size:
            raise ValueError(
                f"global batch ({self.schedule.size(0)} rows at step 0) is smaller than world_size "
                f"{world_size}: every rank needs at least one row"
            )
        self.datasets: list[object] = []
        self.indices: list[InstanceIndex] = []
        opened: dict[Path, object] = {}  # sources that share a prepared folder share one TokenDataset
        for spec in mixture.sources:
            ds = (datasets or {}).get(spec.name)
            if ds is None:
                from ettin.data.shards import TokenDataset

                path = mixture.resolved_path(spec).resolve()
                try:
                    ds = opened[path] if path in opened else TokenDataset(path)
                except (FileNotFoundError, ValueError) as e:
                    raise MixtureError(f"{mixture.file}: sources[{spec.name}].path: {e}") from e
                opened[path] = ds
            doc_range = None
            if spec.subset is not None:
                ranges = getattr(ds, "source_ranges", {})
                if spec.subset not in ranges:
                    raise MixtureError(
                        f"{mixture.file}: sources[{spec.name}].subset: {spec.subset!r} is not in "
                        f"that dataset (it has: {', '.join(sorted(ranges)) or 'none'})"
                    )
                doc_range = ranges[spec.subset]
            self.datasets.append(ds)
            self.indices.append(load_or_build_index(ds, seq_len, self.instance_config, doc_range, cache_dir))
        self.plan = MixturePlan(
            mixture, [len(i) for i in self.indices], [i.num_tokens for i in self.indices], seed, phase
        )

    # -------------------------------------------------------------------------------------- the order

    def global_instances(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, instance) of every row of global batch `step`, both (size(step),) int64."""
        start = self.schedule.start(step)
        return self.plan.lookup(np.arange(start, start + self.schedule.size(step), dtype=np.int64))

    def rank_rows(self, step: int) -> np.ndarray:
        """Rows of the global batch that this rank holds."""
        return np.arange(self.rank, self.schedule.size(step), self.world_size, dtype=np.int64)

    def fingerprint(self, num_steps: int) -> str:
        """sha256 of the first num_steps global batches: (source, instance) ids, batch sizes, and what the
        ids mean (dataset content and instance-index keys). Identical for mlm, clm and any world size."""
        h = hashlib.sha256()
        header = {
            "seq_len": self.seq_len,
            "mode": self.instance_config.mode,
            "sources": [[s.name, i.key] for s, i in zip(self.mixture.sources, self.indices)],
        }
        h.update(json.dumps(header, sort_keys=True).encode())
        sizes = np.array([self.schedule.size(s) for s in range(num_steps)], dtype=np.int64)
        h.update(sizes.tobytes())
        end = self.schedule.start(num_steps)
        chunk = 1 << 20
        for lo in range(0, end, chunk):
            src, inst = self.plan.lookup(np.arange(lo, min(lo + chunk, end), dtype=np.int64))
            h.update(np.stack([src, inst], axis=1).tobytes())
        return h.hexdigest()

    def global_tokens(self, step: int) -> int:
        """Real tokens of global batch `step`: the positions its rows fill (content + [CLS]/[SEP] per segment;
        padding excluded), which is its attention_mask's sum over all ranks. Reads the instance index only."""
        return self._real_tokens(*self.global_instances(step))

    def _real_tokens(self, src: np.ndarray, inst: np.ndarray) -> int:
        return int(sum(int(np.asarray(self.indices[s].lengths)[inst[src == s]].sum()) for s in np.unique(src)))

    # ------------------------------------------------------------------------------------ this rank's rows

    def _row_spans(self, source: int, instance: int) -> list[tuple[np.ndarray, bool]]:
        ds, index = self.datasets[source], self.indices[source]
        out = []
        for doc, a, b in index.spans_of(instance).tolist():
            tokens = ds[doc]
            out.append((tokens[a:b], b == len(tokens)))
        return out

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's rows of global batch `step`: input_ids, labels, attention_mask (B_r, seq_len) int64,
        and position_ids when packing."""
        rows = self.rank_rows(step)
        src, inst = self.plan.lookup(self.schedule.start(step) + rows)
        return self._collate(step, rows, src, inst)

    def step_item(self, step: int) -> tuple[dict[str, torch.Tensor], int]:
        """`(batch(step), global_tokens(step))` from one lookup of the global batch's order (the training feed)."""
        src, inst = self.global_instances(step)
        rows = self.rank_rows(step)
        return self._collate(step, rows, src[rows], inst[rows]), self._real_tokens(src, inst)

    def _collate(self, step: int, rows: np.ndarray, src: np.ndarray, inst: np.ndarray) -> dict[str, torch.Tensor]:
        framed = frame(
            [self._row_spans(s, i) for s, i in zip(src.tolist(), inst.tolist())],
            self.seq_len,
            self.objective,
            self.special,
            self.packed,
        )
        keys = None if self.objective == "clm" else row_keys(self.seed, self.phase, step, rows)
        return collate(framed, self.objective, self.special, keys, self.mlm_probability, self._pool)

    def __getstate__(self) -> dict:  # workers reopen datasets and cached indices instead of copying memmaps
        return self._args

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)


def step_batches(source, start_step: int = 0, workers: int = 1, pin_memory: bool = False, prefetch: int = 4,
                 log: Callable[[str], None] | None = None) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """(batch, real tokens of the global batch) for steps `start_step`, `start_step + 1`, ... of any source with
    `step_item(step)` (= `(batch(step), global_tokens(step))`: a PhaseLoader, a SyntheticSource), built ahead by
    `workers` background processes (torch's DataLoader; 0: built in this thread when asked), `prefetch` steps each,
    in pinned memory when `pin_memory` (for non-blocking copies to a GPU). The global count needs the whole global
    batch's order, which is worth keeping off the training thread at 4608 rows.

    A batch crosses the process boundary as one int32 tensor (every field is a token id, a label >= -100, a mask
    or a position): the values are the batch's, the tensors are int32 views, widened by the consumer after its
    copy to the device (half the bytes over PCIe, and one shared-memory segment instead of three or four).
    The workers' rings of batches must fit in /dev/shm (a full one is a bus error): the first batch is built here,
    and fewer batches are prefetched, or fewer workers run, when they would not (`fit_shared_memory`; one line to
    `log`, default stderr, says so). The order cannot change: every item is `source.step_item(step)`, a pure function
    of the step. Endless: stop iterating when done (closing the generator stops the workers). The DataLoader gets its
    own generator, so starting one does not draw from torch's global generator (which dropout draws from: resume
    stays bitwise)."""
    first = None
    if workers:
        first = _Steps(source, slots=0)[start_step]  # handed out first; its size sizes the rings
        schedule = getattr(source, "schedule", None)  # under a batch-size warmup the full batch is larger
        scale = schedule.full / schedule.size(start_step) if schedule is not None else 1
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 1))  # torchrun's ranks on this host share its /dev/shm
        workers, prefetch, note = fit_shared_memory(math.ceil(first[0].nbytes * scale), workers, prefetch,
                                                    shm_free_bytes(), ranks)
        if note and getattr(source, "rank", 0) == 0:
            (log or (lambda line: print(line, file=sys.stderr, flush=True)))(note)
    loader = torch.utils.data.DataLoader(
        _Steps(source, slots=prefetch + 2), batch_size=None, sampler=_From(start_step + (first is not None)),
        num_workers=workers, pin_memory=pin_memory, prefetch_factor=prefetch if workers else None,
        generator=torch.Generator().manual_seed(0))
    it = iter(loader)  # the workers start on the next steps while the first one trains
    try:
        if first is not None:
            packed, keys, real = first
            yield dict(zip(keys, (packed.pin_memory() if pin_memory else packed).unbind(0))), real
        for packed, keys, real in it:
            if workers and not packed.is_pinned():  # a worker's ring slot: copy it out before the worker reuses it
                packed = packed.clone()
            yield dict(zip(keys, packed.unbind(0))), real
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def shm_free_bytes() -> int | None:
    """Free bytes in /dev/shm (None where there is none: the platform's shared memory is not a small tmpfs)."""
    try:
        st = os.statvfs(SHM)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def fit_shared_memory(batch_bytes: int, workers: int, prefetch: int, free: int | None,
                      ranks: int = 1) -> tuple[int, int, str | None]:
    """(workers, prefetch, a line saying what changed, or None) such that the workers' rings, workers x (prefetch + 2)
    batches of `batch_bytes` (`_Steps`), fit in SHM_SHARE of /dev/shm's `free` bytes split over the host's `ranks`:
    fewer batches prefetched first (down to 1), then fewer workers, then none (batches built in the training thread,
    which needs no shared memory)."""
    def ring(w: int, p: int) -> int:
        return w * (p + 2) * batch_bytes

    budget = SHM_SHARE * free / max(1, ranks) if free is not None else math.inf
    if not workers or ring(workers, prefetch) <= budget:
        return workers, prefetch, None
    fits = [(w, p) for w in range(workers, 0, -1) for p in range(prefetch, 0, -1) if ring(w, p) <= budget]
    w, p = fits[0] if fits else (0, prefetch)
    done = (f"{w} worker(s) prefetching {p} batch(es) each" if w else
            "batches are built in the training thread (as with train.data_workers=0), which may slow training")
    need, share = ring(workers, prefetch), f" (shared by {ranks} ranks)" if ranks > 1 else ""
    wanted = math.ceil(need * ranks / SHM_SHARE / 2**30)
    return w, p, (f"data: {workers} data worker(s) x {prefetch + 2} batches of {_bytes(batch_bytes)} need "
                  f"{_bytes(need)} of /dev/shm, which has {_bytes(free)} free{share}: {done}. To run them all, give "
                  f"the container more shared memory (docker run --shm-size={wanted}g) or set train.data_workers lower")


def _bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


class _From(torch.utils.data.Sampler):
    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        return itertools.count(self.start)


class _Steps(torch.utils.data.Dataset):
    """step -> (the batch's fields stacked as one int32 tensor, their names, the global real-token count).

    In a worker process the tensor is one slot of a ring of `slots` tensors kept in shared memory: handing a batch
    over then costs no new shared-memory segment (creating, mapping and faulting one in took about as long as
    building the batch). A worker holds at most `prefetch` unconsumed batches (DataLoader's prefetch_factor), the
    consumer copies each one out when it arrives (or the pin-memory thread does), so a ring of prefetch + 2 slots
    is never overwritten while it is read."""

    def __init__(self, source, slots: int):
        self.source, self.slots = source, slots
        self._ring: list[torch.Tensor] = []
        self._turn = 0

    def __getitem__(self, step: int) -> tuple[torch.Tensor, tuple[str, ...], int]:
        batch, real = self.source.step_item(step)
        keys = tuple(batch)
        if torch.utils.data.get_worker_info() is None:  # built in the consumer's thread: nothing to share
            return torch.stack([batch[k].to(torch.int32) for k in keys]), keys, real
        shape = (len(keys), *batch[keys[0]].shape)
        if not self._ring or self._ring[0].shape != shape:  # the first batch, or a batch-size change
            self._ring = [torch.empty(shape, dtype=torch.int32).share_memory_() for _ in range(self.slots)]
        out = self._ring[self._turn % self.slots]
        self._turn += 1
        for i, k in enumerate(keys):
            out[i].copy_(batch[k])
        return out, keys, real
