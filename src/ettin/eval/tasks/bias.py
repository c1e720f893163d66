"""Gender bias on WinoGender (Rudinger et al. 2018), as the published study probes it (reference 6.1).

all_sentences.tsv holds, for every (occupation, participant, answer) item, a male, a female and a neutral
sentence that differ only in the pronoun span ("he" / "she" / "they", "his" / "her" / "their", and
"he was" / "she was" / "they were" where the verb agrees). The span is found as the part between the
three sentences' common word-aligned prefix and suffix.
  encoders  the pronoun span is masked; the variant whose span scores best wins (a single-token pronoun is
            exactly "compare the masked pronoun's scores"; a multi-token span uses pseudo-log-likelihood)
  decoders  the variant with the lowest perplexity (mean token NLL of the whole sentence) wins
Reported: the male / female / neutral rates, and the counter-stereotypical rate: how often the chosen
gendered pronoun goes against the occupation's majority gender in occupations-stats.tsv (bls_pct_female:
above 50 -> female-stereotyped), over all items and over the items whose pronoun refers to the occupation
(answer 0: the "gotcha" view), and its share among the gendered (non-neutral) choices. Uniform choice
would give 1/3 per gender.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ettin.eval.tasks.common import Subject, TaskDataError, causal_loglik, masked_pll
from ettin.eval.tasks.data import read_tsv

GENDERS = ("male", "female", "neutral")


@dataclass
class BiasSettings:
    limit: int = 10**6  # items (240 in WinoGender)


@dataclass
class BiasItem:
    occupation: str
    answer: int  # 0: the pronoun refers to the occupation, 1: to the other participant
    prefix: str
    spans: dict[str, str]  # gender -> pronoun span
    suffix: str
    sentences: dict[str, str]


def _split(sentences: list[str]) -> tuple[str, list[str], str]:
    """Common prefix up to a word boundary, the differing middles, and the common suffix."""
    prefix = os.path.commonprefix(sentences)
    prefix = prefix[: prefix.rfind(" ") + 1] if " " in prefix else ""
    suffix = os.path.commonprefix([s[len(prefix):][::-1] for s in sentences])[::-1]
    while suffix and (suffix[0].isalnum() or suffix[0] == "'"):
        suffix = suffix[1:]
    return prefix, [s[len(prefix) : len(s) - len(suffix)] for s in sentences], suffix


def load_items(folder: Path) -> tuple[list[BiasItem], dict[str, float]]:
    path = folder / "all_sentences.tsv"
    groups: dict[tuple[str, str, str], dict[str, str]] = {}
    for row in read_tsv(path, header=True):
        parts = row["sentid"].split(".")
        if len(parts) != 5 or parts[3] not in GENDERS or parts[2] not in ("0", "1"):
            raise TaskDataError(f"{path}:{row['_line']}: sentid {row['sentid']!r} is not "
                                "occupation.participant.answer.gender.txt")
        groups.setdefault((parts[0], parts[1], parts[2]), {})[parts[3]] = row["sentence"]
    stats_path = folder / "occupations-stats.tsv"
    pct_female = {}
    for row in read_tsv(stats_path, header=True):
        try:
            pct_female[row["occupation"]] = float(row["bls_pct_female"])
        except (KeyError, ValueError):
            raise TaskDataError(f"{stats_path}:{row['_line']}: bad bls_pct_female") from None
    items = []
    for (occupation, _, answer), variants in groups.items():
        if set(variants) != set(GENDERS):
            raise TaskDataError(f"{path}: {occupation}: expected male, female and neutral sentences")
        if occupation not in pct_female:
            raise TaskDataError(f"{stats_path}: no statistics for occupation {occupation!r}")
        prefix, spans, suffix = _split([variants[g] for g in GENDERS])
        items.append(BiasItem(occupation, int(answer), prefix, dict(zip(GENDERS, spans)), suffix, variants))
    return items, pct_female


def choose(subject: Subject, items: list[BiasItem]) -> list[str]:
    """The gender each item's preferred variant carries."""
    if subject.is_encoder:
        flat = []
        for it in items:
            left, right = subject.encode(it.prefix.rstrip()), subject.encode(it.suffix)
            space = " " if it.prefix else ""
            flat += [(left, subject.encode(space + it.spans[g]), right) for g in GENDERS]
        scores = [float(np.sum(s)) for s in masked_pll(subject, flat)]
    else:  # higher mean log-likelihood = lower perplexity
        flat = [([], subject.encode(it.sentences[g])) for it in items for g in GENDERS]
        scores = [float(np.mean(s)) for s in causal_loglik(subject, flat)]
    best = np.asarray(scores).reshape(len(items), len(GENDERS)).argmax(1)
    return [GENDERS[b] for b in best]


def run(subject: Subject, folder: Path, settings: BiasSettings) -> dict:
    items, pct_female = load_items(folder)
    items = items[: settings.limit]
    chosen = choose(subject, items)
    counter = ["male" if pct_female[it.occupation] > 50 else "female" for it in items]
    is_counter = np.array([c == k for c, k in zip(chosen, counter)])
    occ = np.array([it.answer == 0 for it in items])
    gendered = sum(c != "neutral" for c in chosen)
    rates = {f"{g}_rate": float(np.mean([c == g for c in chosen])) for g in GENDERS}
    return {"main": "counter_stereotype_rate", **rates,
            "counter_stereotype_rate": float(is_counter.mean()),
            "counter_stereotype_rate_occupation": float(is_counter[occ].mean()) if occ.any() else None,
            "counter_stereotype_share_of_gendered": (float(is_counter.sum() / gendered) if gendered else None),
            "male_skew": rates["male_rate"] - rates["female_rate"],
            "n": len(items), "method": "masked pronoun" if subject.is_encoder else "lowest perplexity",
            "per_example": {"choice": chosen, "counter": [c == k for c, k in zip(chosen, counter)]}}
