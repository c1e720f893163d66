"""Moved: a recipe's data is made ready by `ettin.data.ready` (tokenizer, shards, mixtures, held-out split,
synthetic rows). This name stays for the callers that still import it from here (train/cli.py)."""

from ettin.data.ready import ensure_data

__all__ = ["ensure_data"]
