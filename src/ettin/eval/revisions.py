"""Published learning curves: `ettin eval HUB_ID --revisions PATTERN` evaluates a hub model's revisions.

The Ettin suite publishes its intermediate checkpoints as revisions (branches or tags) of each model's hub
repository, named by phase and step: `step{N}` (pre-training), `ext{N}` (context extension), `decay{N}` (decay).
PATTERN is `all` or comma-separated globs over those names (`step*`, `decay*`, `step5*,ext*`); `--every K` keeps
every K-th of the selected revisions (the last always). Each revision is downloaded (huggingface_hub's cache) and
evaluated as its own checkpoint, `<out>/<org>--<name>/<revision>.json`, with the phase, step, commit and training
tokens in its results' model record; a revision already evaluated with the same files and settings is not
evaluated again (ettin.eval.runner's cache). `ettin report` then draws each task against training tokens, one line
per role: evaluate the encoder's and the decoder's revisions into one folder for the two side by side.

Training tokens are not in the revisions' files, so they are estimated from the names: within a phase, tokens grow
in proportion to the step number, reaching the phase's size at the phase's last published revision
(PHASE_TOKENS: 1.7T pre-training, 250B extension, 50B decay, from the published configs; the 1B model's
extension and decay are a third of that). The batch-size warmup of early pre-training (its first 3-125B tokens)
makes the estimate too high there. The results say `tokens_estimated`; the report says so under the curves.
"""

from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ettin.eval.runner import Target, evaluate_target, precheck
from ettin.io import is_hub_id

PHASES = {"step": "pretrain", "ext": "extension", "decay": "decay"}  # name prefix -> phase, in training order
PHASE_TOKENS = {"step": 1_700_000_000_000, "ext": 250_000_000_000, "decay": 50_000_000_000}
PHASE_TOKENS_1B = {"step": 1_700_000_000_000, "ext": 83_333_000_000, "decay": 16_667_000_000}
NAME = re.compile(r"^(step|ext|decay)(\d+)$")


@dataclass(frozen=True)
class Revision:
    name: str
    prefix: str  # step | ext | decay
    step: int
    commit: str
    tokens: int  # estimated (see the module docstring)


def hub_id(text: str) -> str:
    """A hub id (`org/name`); local paths are refused: they have no revisions."""
    if not is_hub_id(text):  # ettin.io's rule: a path here, or anything path-like, is no hub id
        raise ValueError(f"--revisions: {text} is not a hub id (org/name); revisions belong to hub models "
                         "(for a local run folder, `ettin eval RUN` draws its kept checkpoints)")
    return text


def list_revisions(repo: str) -> list[Revision]:
    """Every step/ext/decay revision of a hub model (branches and tags), in training order, tokens estimated."""
    from huggingface_hub import list_repo_refs

    try:
        refs = list_repo_refs(repo)
    except Exception as e:  # offline, unknown repository, no access
        raise FileNotFoundError(f"{repo}: its revisions could not be listed from the hub ({e})") from e
    found = {}
    for ref in [*refs.branches, *getattr(refs, "tags", [])]:
        m = NAME.match(ref.name)
        if m:
            found[ref.name] = (m.group(1), int(m.group(2)), ref.target_commit)
    sizes = PHASE_TOKENS_1B if repo.lower().endswith("-1b") else PHASE_TOKENS
    last = {p: max((s for q, s, _ in found.values() if q == p), default=0) for p in PHASES}
    before = dict(zip(PHASES, [0, sizes["step"], sizes["step"] + sizes["ext"]]))
    revs = [Revision(name, p, s, c, before[p] + (round(sizes[p] * s / last[p]) if last[p] else 0))
            for name, (p, s, c) in found.items()]
    return sorted(revs, key=lambda r: (list(PHASES).index(r.prefix), r.step))


def select(revs: list[Revision], pattern: str, every: int = 1) -> list[Revision]:
    """The revisions whose names match PATTERN (`all` or comma-separated globs), then every `every`-th."""
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    if not globs:
        raise ValueError("--revisions: no pattern given (all, or globs such as step*,decay*)")
    picked = [r for r in revs if "all" in globs or any(fnmatch.fnmatchcase(r.name, g) for g in globs)]
    if not picked:
        names = ", ".join(r.name for r in revs[:8]) + (" ..." if len(revs) > 8 else "")
        raise ValueError(f"--revisions {pattern}: matches none of the model's {len(revs)} step/ext/decay "
                         f"revisions ({names or 'none'})")
    return [r for i, r in enumerate(picked) if i % every == 0 or i == len(picked) - 1]


def revision_target(repo: str, rev: Revision) -> Target:
    """The revision's files (downloaded when not cached) as an evaluation target."""
    from ettin.hf import resolve_path

    try:
        folder = resolve_path(repo, revision=rev.name)
    except Exception as e:
        raise FileNotFoundError(f"{repo}@{rev.name}: the hub could not provide it ({e})") from e
    meta = {"phase": PHASES[rev.prefix], "step": rev.step, "tokens": rev.tokens,
            "record": {"revision": rev.name, "commit": rev.commit, "tokens_estimated": True, "source": repo}}
    return Target(repo.replace("/", "--"), rev.name, Path(folder), "hf", Path(folder) / "tokenizer.json", meta)


def run_revisions(args, tasks: list, data_dir: Path) -> int:
    """`ettin eval HUB_ID... --revisions PATTERN` (the tasks are built and checked by the caller)."""
    plans = []
    for model in args.model:  # every model's revisions are listed before any is downloaded or evaluated
        repo = hub_id(model)
        plans.append((repo, select(list_revisions(repo), args.revisions, args.every)))
    total = sum(len(revs) for _, revs in plans)
    print(f"ettin eval: {total} revision(s) of {len(plans)} model(s) x {len(tasks)} task(s) -> {args.out}",
          file=sys.stderr)
    for repo, revs in plans:
        for rev in revs:
            target = revision_target(repo, rev)
            precheck(target)
            evaluate_target(target, tasks, data_dir, args.out, seed=args.seed, device=args.device,
                            max_length=args.max_length, use_cache=not args.no_cache, role=args.role,
                            log=lambda s: print(s, file=sys.stderr))
    return 0
