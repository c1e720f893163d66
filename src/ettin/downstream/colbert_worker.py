"""The half of `ettin finetune colbert` that runs inside the isolated PyLate environment (see colbert.py).

Run as a script by that environment's interpreter: `python colbert_worker.py JOB.json`. It imports only the
standard library, torch, datasets, sentence-transformers (5.3, PyLate's pin) and PyLate, never ettin (whose
dependencies, transformers 5.24 and sentence-transformers 6, are not in that environment). Everything it needs
comes in the job file; everything it produces goes into the job's `out` folder (the model) and `result` file
(rankings and training log), both written by the parent's names.

Work, all by PyLate: `models.ColBERT` on the Hugging Face folder (a linear projection to `embedding_size` added
on the backbone, [Q]/[D] prefixes); the untuned model scored first; training with sentence-transformers' trainer,
PyLate's `losses.CachedContrastive` (or `Contrastive`) over in-batch negatives and `utils.ColBERTCollator`; the
saved folder reloaded with `models.ColBERT(path)` and scored. Scoring: every document encoded, added to a PyLate
`indexes.Voyager` index (HNSW over token vectors), and the queries run through `retrieve.ColBERT` (candidates
from the index, exact MaxSim on them), the top `k` kept.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def rank(model, job: dict, index_dir: Path, name: str) -> dict[str, dict[str, float]]:
    """PyLate's Voyager index + ColBERT retriever over the job's corpus: query id -> {doc id: MaxSim score}."""
    from pylate import indexes, retrieve

    corpus, queries = job["corpus"], job["queries"]
    bs = job["encode_batch_size"]
    docs = model.encode(corpus["texts"], batch_size=bs, is_query=False, show_progress_bar=False)
    index = indexes.Voyager(index_folder=str(index_dir), index_name=name, override=True,
                            embedding_size=docs[0].shape[-1])
    index.add_documents(documents_ids=corpus["ids"], documents_embeddings=docs)
    q = model.encode(queries["texts"], batch_size=bs, is_query=True, show_progress_bar=False)
    hits = retrieve.ColBERT(index=index).retrieve(queries_embeddings=q, k=job["k"], device=job["device"])
    return {qid: {str(h["id"]): float(h["score"]) for h in row} for qid, row in zip(queries["ids"], hits)}


def main(job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    import torch
    from datasets import Dataset
    from pylate import losses, models, utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    torch.manual_seed(job["seed"])
    t = job["train"]
    work = Path(job["work"])
    lengths = {"document_length": job["document_length"], "query_length": job["query_length"]}
    model = models.ColBERT(model_name_or_path=job["model"], device=job["device"],
                           embedding_size=job["embedding_size"], **lengths)
    start = time.perf_counter()
    untuned = rank(model, job, work / "index", "untuned")
    untuned_seconds = time.perf_counter() - start
    pairs = json.loads(Path(job["pairs"]).read_text())
    train = Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    loss = (losses.CachedContrastive(model=model, mini_batch_size=t["mini_batch_size"], temperature=t["temperature"])
            if t["loss"] == "cached" else losses.Contrastive(model=model, temperature=t["temperature"]))
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work / "trainer"), num_train_epochs=t["epochs"], max_steps=t["max_steps"],
        per_device_train_batch_size=t["batch_size"], learning_rate=t["lr"], warmup_steps=0.1, seed=job["seed"],
        data_seed=job["seed"], logging_steps=10, save_strategy="no", report_to="none",
        use_cpu=job["device"] == "cpu", disable_tqdm=True, batch_sampler=BatchSamplers.NO_DUPLICATES)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss,
                                         data_collator=utils.ColBERTCollator(model.tokenize))
    start = time.perf_counter()
    out = trainer.train()
    train_seconds = time.perf_counter() - start
    model.save_pretrained(job["out"])
    tuned_model = models.ColBERT(model_name_or_path=job["out"], device=job["device"])  # what a user loads
    start = time.perf_counter()
    tuned = rank(tuned_model, job, work / "index", "tuned")
    result = {"untuned": untuned, "tuned": tuned, "train_loss": float(out.training_loss),
              "steps": int(out.global_step), "log": [h for h in trainer.state.log_history if "loss" in h],
              "seconds": {"untuned_scoring": untuned_seconds, "training": train_seconds,
                          "tuned_scoring": time.perf_counter() - start},
              "embedding_dim": int(tuned_model[1].out_features) if hasattr(tuned_model[1], "out_features") else None,
              "versions": {"torch": torch.__version__, **_versions()}}
    Path(job["result"]).write_text(json.dumps(result) + "\n")
    return 0


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("pylate", "sentence-transformers", "transformers", "voyager")}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
