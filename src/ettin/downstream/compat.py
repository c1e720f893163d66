"""Every private name of a third-party library that ettin uses, behind this one adapter (issue 30): nothing else
in ettin touches them. A private name may go in any release; when one is missing, `check` (run by each command
before any model work) and every accessor below fail with one clear line naming the library, the version found, the
versions tested and what to do, instead of an AttributeError deep inside a run.

lm-eval (`ettin lm-eval`; the versions tested are TESTED's, pinned by the `downstream` extra):
  lm_eval.tasks._index.Kind / Entry     what TaskManager.task_index (public) holds per name: a task, group or tag,
                                        its YAML file, inline config and tags (`task_kind`)
  lm_eval.tasks._yaml_loader.load_yaml  a task's YAML read without its data or functions (`read_task_yaml`): how
                                        ettin checks every task's data source and output type before running any
mteb (`ettin mteb`):
  mteb._evaluators.retrieval_metrics.calculate_retrieval_scores
                                        mteb's own retrieval metric code (pytrec_eval), unrounded (`retrieval_scores`)
  AbsTaskRetrieval's data layout        a local BEIR folder as an MTEB task sets `dataset[subset][split]` to a
                                        RetrievalSplitData (corpus, queries, relevant_docs, top_ranked) and
                                        `data_loaded` in its `load_data` (`local_retrieval_task`)

The downstream commands use the other libraries (transformers, sentence-transformers, trl, PyLate) through public
names only.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from importlib import metadata

from ettin.io import UserError

# import name -> (distribution name, versions the tests ran with)
TESTED = {"lm_eval": ("lm-eval", ("0.4.13",)), "mteb": ("mteb", ("2.26.24",))}
KIND, ENTRY, LOAD_YAML = ("lm_eval.tasks._index:Kind", "lm_eval.tasks._index:Entry",
                          "lm_eval.tasks._yaml_loader:load_yaml")
SCORES = "mteb._evaluators.retrieval_metrics:calculate_retrieval_scores"
SPLIT_DATA = "mteb.abstasks.retrieval_dataset_loaders:RetrievalSplitData"
# import name -> {"module:attribute": what ettin uses it for}
PRIVATE = {
    "lm_eval": {KIND: "the kind of a registry name: task, group or tag",
                ENTRY: "a registry entry's YAML file, config and tags",
                LOAD_YAML: "reading a task's config without its data"},
    "mteb": {SCORES: "mteb's retrieval metrics",
             SPLIT_DATA: "the data of a local retrieval task",
             "mteb.abstasks.retrieval:AbsTaskRetrieval.load_data": "loading a local retrieval task"},
}
ENTRY_FIELDS = {"kind", "yaml_path", "cfg", "tags"}  # read from lm-eval's Entry
SPLIT_KEYS = {"corpus", "queries", "relevant_docs", "top_ranked"}  # what a local retrieval task sets


class LibraryMismatch(UserError):
    """An installed library lacks a private name ettin uses: a version ettin was not tested with."""


def version(library: str) -> str:
    try:
        return metadata.version(TESTED[library][0])
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def mismatch(spec: str, shown: str | None = None) -> LibraryMismatch:
    """The error for a PRIVATE spec ("module:attribute") that is missing or changed (`shown`: what to name)."""
    module, _, attr = spec.partition(":")
    library = module.split(".")[0]
    name, what = shown or f"{module}.{attr}", PRIVATE[library][spec]
    dist, tested = TESTED[library]
    return LibraryMismatch(
        f"{dist} {version(library)}: {name}, a private name ettin uses for {what}, is missing or changed; ettin was "
        f"tested with {dist} {', '.join(tested)}: install that (pip install '{dist}=={tested[-1]}', as the "
        "`downstream` extra pins it), or adapt ettin/downstream/compat.py to this version")


def private(spec: str):
    """The object a PRIVATE spec ("module:attribute.path") names, or LibraryMismatch."""
    module, _, attr = spec.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise mismatch(spec) from None
    return obj


def check(library: str) -> None:
    """Every private name of `library` that ettin uses is there and has the shape ettin reads."""
    for spec in PRIVATE[library]:
        private(spec)
    if library == "lm_eval":
        kind, entry = private(KIND), private(ENTRY)
        if not {"TAG", "GROUP"} <= set(getattr(kind, "__members__", {})):
            raise mismatch(KIND, "lm_eval.tasks._index.Kind (TAG, GROUP)")
        if not dataclasses.is_dataclass(entry) or not ENTRY_FIELDS <= {f.name for f in dataclasses.fields(entry)}:
            raise mismatch(ENTRY, f"lm_eval.tasks._index.Entry ({', '.join(sorted(ENTRY_FIELDS))})")
        if not {"resolve_func", "recursive"} <= set(inspect.signature(private(LOAD_YAML)).parameters):
            raise mismatch(LOAD_YAML, "lm_eval.tasks._yaml_loader.load_yaml(resolve_func, recursive)")
    elif library == "mteb":
        if not SPLIT_KEYS <= set(getattr(private(SPLIT_DATA), "__annotations__", {})):
            raise mismatch(SPLIT_DATA, f"RetrievalSplitData ({', '.join(sorted(SPLIT_KEYS))})")


# ------------------------------------------------------------------------------------------------ lm-eval
def task_kind(entry) -> str:
    """"tag", "group" or "task" of a TaskManager.task_index entry."""
    kind = private(KIND)
    try:
        return {kind.TAG: "tag", kind.GROUP: "group"}.get(entry.kind, "task")
    except AttributeError:
        raise mismatch(ENTRY, "lm_eval.tasks._index.Entry.kind") from None


def read_task_yaml(path) -> dict:
    """A task YAML (its includes followed) without loading data or resolving `!function`s."""
    return private(LOAD_YAML)(path, resolve_func=False, recursive=True)


# ------------------------------------------------------------------------------------------------ mteb
def retrieval_scores(ranking: dict, qrels: dict, k_values: list[int]) -> tuple[dict, dict]:
    """(per query {metric: value}, {"MRR@k": value}) by mteb's own metric code, unrounded."""
    out = private(SCORES)(ranking, qrels, k_values)
    try:
        return out.all_scores, out.mrr
    except AttributeError:
        raise mismatch(SCORES, "calculate_retrieval_scores(...).all_scores / .mrr") from None


def local_retrieval_task(col, name: str):
    """An MTEB retrieval task holding a loaded collection (test split, binary judgements)."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata

    check("mteb")  # the layout below is what this version reads

    class LocalRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name=name, type="Retrieval", main_score="ndcg_at_10", category="t2t", modalities=["text"],
            description=f"ettin: the local BEIR folder {name}", reference=None,
            dataset={"path": f"local:{name}", "revision": "local"}, eval_splits=["test"], eval_langs=["eng-Latn"],
            date=None, dialect=None, domains=None, task_subtypes=None, license=None, annotations_creators=None,
            sample_creation=None, bibtex_citation=None)

        def load_data(self, num_proc=None, **kwargs) -> None:
            self.dataset = {"default": {"test": {
                "corpus": Dataset.from_dict({"id": col.doc_ids, "text": col.docs, "title": [""] * len(col.docs)}),
                "queries": Dataset.from_dict({"id": col.query_ids, "text": col.queries}),
                "relevant_docs": {q: dict.fromkeys(col.qrels[q], 1) for q in col.query_ids},
                "top_ranked": None}}}
            self.data_loaded = True

    return LocalRetrieval()
