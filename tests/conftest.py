import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ETTIN_SHARED_DATA", REPO.parent / "shared" / "data"))


def hub_tokenizer_cache(cache: Path, repo: str = "answerdotai/ModernBERT-base") -> Path:
    """A Hugging Face hub cache (huggingface_hub's layout: refs/main -> a snapshot) holding `repo`'s tokenizer files,
    copied from ../shared/data/modernbert_tokenizer: what `data.tokenizer: <hub id>` reads offline once downloaded.
    Point HF_HUB_CACHE (a subprocess) or huggingface_hub.constants.HF_HUB_CACHE (this process) at it."""
    import shutil

    commit = "0" * 40
    snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (snap.parents[1] / "refs").mkdir(exist_ok=True)
    (snap.parents[1] / "refs" / "main").write_text(commit)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(SHARED_DATA / "modernbert_tokenizer" / name, snap / name)
    return snap


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Small-model tests run faster (and the same) on one thread when the machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
