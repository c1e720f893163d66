"""`ettin finetune {embed,sparse,rerank,colbert,sft}`, `ettin lm-eval` and `ettin mteb`.

Each command is a module of ettin.downstream exposing `add_arguments(parser)` and `run(args) -> int`; the
module is imported when the parser is built (it must import its heavy libraries inside `run`), so a command whose
library is missing still shows in `--help` and fails with the install line when run."""

from __future__ import annotations

import importlib

from ettin.io import UserError

FINETUNE = {
    "embed": ("embed", "a bi-encoder (sentence-transformers), scored on a BEIR folder beside BM25"),
    "sparse": ("sparse", "SPLADE on an encoder's MLM head (sentence-transformers SparseEncoder)"),
    "rerank": ("rerank", "a cross-encoder reranker (sentence-transformers CrossEncoder) over BM25's top 100"),
    "colbert": ("colbert", "a ColBERT multi-vector retriever (PyLate)"),
    "sft": ("sft", "instruction tuning of a decoder with a chat template (TRL SFTTrainer)"),
}
LM_EVAL = ("lmeval", "lm-evaluation-harness: any task of its registry or your own YAMLs (decoders, and encoders by "
           "masked PLL)")
MTEB = ("mteb_eval", "MTEB v2 (the mteb package) on an embedding model: local BEIR folders offline, MTEB tasks and "
        "benchmarks online")


def _module(name: str):
    try:
        return importlib.import_module(f"ettin.downstream.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"ettin.downstream.{name}":
            raise
        return None


def _missing(command: str):
    def run(args) -> int:
        raise UserError(f"{command}: not available in this version of ettin")

    return run


def _add(sub, command: str, name: str, help_text: str, label: str) -> None:
    p = sub.add_parser(command, help=help_text, description=help_text)
    module = _module(name)
    if module is None:
        p.set_defaults(func=_missing(label))
        return
    module.add_arguments(p)
    p.set_defaults(func=module.run)


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a model with a downstream library and score it",
                              description="Fine-tune an ettin checkpoint, run folder, Hugging Face folder or hub "
                              "id with the library made for the job; writes a model folder that library loads "
                              "back and a results JSON for `ettin report`.")
    sub = p.add_subparsers(dest="task", required=True)
    for command, (name, help_text) in FINETUNE.items():
        _add(sub, command, name, help_text, f"ettin finetune {command}")
    _add(subparsers, "lm-eval", LM_EVAL[0], LM_EVAL[1], "ettin lm-eval")
    _add(subparsers, "mteb", MTEB[0], MTEB[1], "ettin mteb")
