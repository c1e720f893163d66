"""Make the data of a recipe ready, and hand the trainer one loader per phase.

    ensure_data(recipe, log)                # once, on the main rank: tokenizer and token shards when missing
    data = RecipeData.open(recipe)          # every rank: the tokenizer, the model's vocabulary and special ids
    loader = data.phase_loader(phase, objective, rank, world_size)

Everything a recipe's `data:` section means is decided here: the tokenizer (trained on the training side of
the sources when `data.prepare.tokenizer_vocab_size` asks for it), the prepared shards (`ettin data prepare`),
the phase's mixture (`data.mixtures`: a YAML path relative to the recipe, or an inline mapping), the held-out
tail of every source (ettin.data.holdout), and synthetic rows for speed checks (ettin.data.synthetic).
A loader has the contract of `ettin.data.loader.PhaseLoader`: `batch(step)` (this rank's slice of global
batch `step`, a pure function of (seed, phase, step)) and `fingerprint(num_steps)`.

Whether a recipe's data is ready (and what is wrong, by file and key) is `ettin.data.check.check_data`, which the
trainer asks once before `ensure_data` makes what is missing.

The recipe is read, never imported: any object with the fields of `ettin.train.recipe.Recipe` works.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ettin.data.collate import SpecialTokens, collation_objective
from ettin.data.holdout import training_part, training_side
from ettin.data.order import open_order, order_spec
from ettin.data.synthetic import SYNTHETIC_SPECIAL, SyntheticSource

# recipe key -> the collations that read it (a recipe of another objective cannot use it)
COLLATION_KEYS = {"phases.*.mlm_probability": ("mlm", "mntp"), "train.mntp": ("mlm", "mntp")}


@dataclass
class RecipeData:
    """A recipe's data once it is ready: what the model needs from it, and a loader per phase."""

    recipe: Any
    tokenizer: Any  # ettin.data.tokenizer.TokenizerInfo; None for synthetic data
    vocab_size: int  # the model's embedding rows
    special_ids: dict[str, int | None]  # the model config's special-token fields

    @classmethod
    def open(cls, recipe) -> RecipeData:
        data = recipe.data
        if data.source != "prepared":
            return cls(recipe, None, int(data.vocab_size), dict(SYNTHETIC_SPECIAL))
        from ettin.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(data.tokenizer)
        return cls(recipe, tokenizer, int(data.vocab_size or tokenizer.vocab_size), tokenizer.model_special_ids)

    def special_tokens(self) -> SpecialTokens:
        if self.tokenizer is not None:
            return SpecialTokens.coerce(self.tokenizer)
        s = self.special_ids
        return SpecialTokens(cls_id=s["bos_token_id"], sep_id=s["eos_token_id"], pad_id=s["pad_token_id"],
                             mask_id=s["mask_token_id"], num_tokens=self.vocab_size)

    def phase_loader(self, phase, objective: str, rank: int = 0, world_size: int = 1):
        """The batches of one phase for one rank (`objective`: the model's, mlm or clm)."""
        recipe = self.recipe
        collate_as = collation_objective(objective, recipe.train.mntp)
        order = order_spec(recipe.data.mixtures.get(phase.mixture))
        if order is not None:  # the published batch order, replayed (ettin.data.order)
            return open_order(order, recipe.source_file, phase, collate_as, self.special_tokens(), recipe.seed,
                              recipe.batch_size(phase), rank, world_size)
        if recipe.data.source == "synthetic":
            return SyntheticSource(
                vocab_size=self.vocab_size, seq_len=phase.seq_len, global_batch_size=recipe.batch_size(phase),
                seed=recipe.seed, phase=phase.name, objective=collate_as, rank=rank, world_size=world_size,
                mlm_probability=phase.mlm_probability,
            )
        from ettin.data.loader import PhaseLoader

        os.environ.update(recipe.data.vars)
        mixture = resolve_mixture(recipe, phase)
        return PhaseLoader(
            mixture, self.tokenizer, phase.seq_len, recipe.batch_size(phase), recipe.seed, phase.name, collate_as,
            rank=rank, world_size=world_size, mlm_probability=phase.mlm_probability,
            datasets=training_side(mixture, recipe.data.holdout_fraction),
        )


def ensure_data(recipe, log=print) -> None:
    """Train the tokenizer and prepare the shards a recipe names, when missing (call on the main rank only)."""
    prep, data = recipe.data.prepare, recipe.data
    if data.source != "prepared" or prep is None:
        return
    from ettin.data.prepare import PrepareConfig, prepare
    from ettin.data.tokenizer import fetch_tokenizer, load_tokenizer

    tokenizer_path = fetch_tokenizer(data.tokenizer)  # a hub id: downloaded here, once, on the main rank
    if not tokenizer_path.exists():
        if not prep.tokenizer_vocab_size:
            raise FileNotFoundError(f"{recipe.source_file}: data.tokenizer {tokenizer_path} does not exist "
                                    "(set data.prepare.tokenizer_vocab_size to train one)")
        log(f"training a {prep.tokenizer_vocab_size}-token tokenizer -> {tokenizer_path}")
        train_tokenizer_for(prep.sources, prep.tokenizer_vocab_size, data.holdout_fraction, tokenizer_path)
    prepare(prep.sources, load_tokenizer(tokenizer_path), PrepareConfig(out=Path(prep.out), workers=prep.workers,
                                                                        log=log))


def train_tokenizer_for(sources: list[str], vocab_size: int, fraction: float, out: Path) -> None:
    """A byte-level BPE on the training side of each source (the held-out tail is not seen)."""
    from ettin.data.sources import iter_documents
    from ettin.data.tokenizer import save_tokenizer, train_tokenizer

    texts: list[str] = []
    for spec in sources:
        texts.extend(training_part([d.text for d in iter_documents(spec) if d.text], fraction))
    tokenizer = train_tokenizer(texts, vocab_size)
    folder = out.parent if out.suffix == ".json" else out
    written = save_tokenizer(tokenizer, folder)
    if out.suffix == ".json" and (Path(written) / "tokenizer.json") != out:
        os.replace(Path(written) / "tokenizer.json", out)


def resolve_mixture(recipe, phase):
    """data.mixtures[phase.mixture]: a mixture YAML path (relative to the recipe file) or an inline mapping."""
    from ettin.data.mixture import load_mixture, mixture_from_dict

    spec = recipe.data.mixtures.get(phase.mixture, phase.mixture)
    if isinstance(spec, dict):
        return mixture_from_dict(spec, file=f"{recipe.source_file}: data.mixtures.{phase.mixture}")
    path = Path(str(spec))
    if not path.is_absolute() and not path.exists():
        path = Path(recipe.source_file).parent / path
    return load_mixture(path)


def unusable_keys(raw: dict) -> list[str]:
    """What a raw recipe mapping sets that its own `objective` cannot use, one "key: reason" a key, e.g.
    "phases.0.mlm_probability: only mlm and mntp training read it, not clm" for a decoder recipe (masking rates
    and MNTP are encoder settings). A recipe without `objective` is an mlm one (and may serve both, as
    `ettin pair` trains it); its keys all have a use."""
    objective = raw.get("objective", "mlm")
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    collate_as = collation_objective(objective, bool(train.get("mntp")))
    found = []
    for key, users in COLLATION_KEYS.items():
        if collate_as in users:
            continue
        section, *rest = key.split(".")
        node = raw.get(section)
        if rest[0] == "*":
            keys = [f"{section}.{i}.{rest[1]}" for i, item in enumerate(node if isinstance(node, list) else [])
                    if isinstance(item, dict) and rest[1] in item]
        else:
            keys = [key] if isinstance(node, dict) and rest[0] in node else []
        found += [f"{k}: only {' and '.join(users)} training read it, not {collate_as}" for k in keys]
    return found
