"""What a user takes away from an export: a folder that transformers' AutoTokenizer and pipelines use with
the framing the model was trained on, readable by others, never complete-looking but unusable; and the
model's code does not import its Hugging Face I/O (no import cycle)."""

import ast
import os
import stat
from pathlib import Path

import pytest
import torch

import ettin
from ettin.cli import main
from ettin.config import preset
from ettin.data.tokenizer import tokenizer_info, train_tokenizer
from ettin.hf import from_pretrained, save_pretrained
from ettin.inference import generate
from ettin.model import EttinModel
from ettin.train import checkpoint as ckpt

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer, pipeline  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = [
    "The president said that the nation is strong and the people are free.",
    "The capital of France is Paris, a city on the river Seine.",
    "Congress passed the bill and the president signed it into law.",
    "The whale swam beneath the ship while the sailors watched the sea.",
    "In the spring the farmers plant the fields and in the autumn they harvest.",
] * 8
PROMPT = "The president said that"
CONTEXT = 256  # the models' max_position_embeddings: not transformers' 1e30 default, not the 8192 default


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 384)  # the project's own layout: [CLS] $A [SEP] post-processor


@pytest.fixture(scope="module")
def info(tok):
    return tokenizer_info(tok)


def make_model(objective, info):
    torch.manual_seed(0)
    cfg = preset("tiny", objective, vocab_size=info.vocab_size, pad_token_id=info.pad_id, bos_token_id=info.cls_id,
                 eos_token_id=info.sep_id, mask_token_id=info.mask_id, max_position_embeddings=CONTEXT)
    return EttinModel(cfg).eval()


@pytest.fixture(scope="module")
def exports(tok, info, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    models = {objective: make_model(objective, info) for objective in ("mlm", "clm")}
    for objective, model in models.items():
        save_pretrained(model, root / objective, tokenizer=tok)
    return root, models


def bare(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def test_decoder_tokenizer_adds_bos_only_encoder_keeps_cls_sep(exports, tok, info):
    root, _ = exports
    a, b = bare(tok, PROMPT), bare(tok, "the people are free")
    cls, sep = info.cls_id, info.sep_id
    dec, enc = AutoTokenizer.from_pretrained(root / "clm"), AutoTokenizer.from_pretrained(root / "mlm")
    # the clm collator frames a document `[CLS] span`, [SEP] only where the document ends: a prompt has no end
    assert dec(PROMPT).input_ids == [cls, *a]
    assert dec(PROMPT, "the people are free").input_ids == [cls, *a, cls, *b]
    assert enc(PROMPT).input_ids == [cls, *a, sep]
    assert enc(PROMPT, "the people are free").input_ids == [cls, *a, sep, *b, sep]
    assert (dec.bos_token_id, dec.eos_token_id, dec.pad_token_id) == (cls, sep, info.pad_id)
    assert (enc.cls_token_id, enc.sep_token_id, enc.mask_token_id) == (cls, sep, info.mask_id)
    assert dec.padding_side == "left" and enc.padding_side == "right"
    assert tok.encode(PROMPT).ids == [cls, *a, sep]  # the caller's tokenizer is left as it was


def test_modernbert_decoder_export_prompt_is_bos_and_text(shared_data, tmp_path):
    model = EttinModel(preset("tiny", "clm"))  # the ModernBERT vocabulary and special ids
    save_pretrained(model, tmp_path / "dec", tokenizer=shared_data / "modernbert_tokenizer")
    tok = AutoTokenizer.from_pretrained(tmp_path / "dec")
    assert tok(PROMPT).input_ids == [50281, 510, 4007, 753, 326]  # [CLS] The president said that; no [SEP]
    assert tok.model_max_length == model.config.max_position_embeddings == 8192


def test_framing_comes_from_the_model_not_the_source_tokenizer(tok, info, tmp_path):
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(tok.to_str())
    plain.post_processor = None  # e.g. a GPT-2 style tokenizer.json: adds nothing
    save_pretrained(make_model("mlm", info), tmp_path / "enc", tokenizer=plain)
    ids = AutoTokenizer.from_pretrained(tmp_path / "enc")(PROMPT).input_ids
    assert ids == [info.cls_id, *bare(tok, PROMPT), info.sep_id]


def test_text_generation_pipeline_continues_the_prompt_as_ettin_does(exports, tok, info):
    root, models = exports
    pipe = pipeline("text-generation", model=str(root / "clm"))
    got = pipe(PROMPT, max_new_tokens=12, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    prompt = torch.tensor([[info.cls_id, *bare(tok, PROMPT)]])
    ref = generate(models["clm"], prompt, max_new_tokens=12, eos_token_id=info.sep_id)[0].tolist()
    assert got == ref
    text = pipe(PROMPT, max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert text.startswith(PROMPT) and "[SEP]" not in text


def test_fill_mask_pipeline_matches_ettin(exports, tok, info):
    root, models = exports
    fill = pipeline("fill-mask", model=str(root / "mlm"))
    text = "The capital of France is [MASK]."
    got = fill(text, top_k=5)
    enc = tok.encode(text)  # the source tokenizer: [CLS] ... [SEP], as the encoder trained
    ids = torch.tensor([enc.ids])
    at = enc.ids.index(info.mask_id)
    with torch.no_grad():
        probs = models["mlm"](ids).logits[0, at].softmax(-1)
    top = probs.topk(5)
    assert [r["token"] for r in got] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([r["score"] for r in got]), top.values, atol=1e-5, rtol=1e-4)


def test_tokenizer_model_max_length_is_the_models_context(exports):
    root, models = exports
    for objective in ("mlm", "clm"):
        assert AutoTokenizer.from_pretrained(root / objective).model_max_length == CONTEXT
        assert models[objective].config.max_position_embeddings == CONTEXT


def test_no_tokenizer_is_an_error_or_an_explicit_weights_only_folder(info, tok, tmp_path):
    model = make_model("clm", info)
    with pytest.raises(ValueError, match="tokenizer="):
        save_pretrained(model, tmp_path / "x")
    with pytest.raises(ValueError, match="exclude"):
        save_pretrained(model, tmp_path / "x", tokenizer=tok, weights_only=True)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        save_pretrained(model, tmp_path / "x", tokenizer=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="bos_token_id"):
        save_pretrained(EttinModel(model.config.replace(bos_token_id=9999)), tmp_path / "x", tokenizer=tok)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary folder left
    save_pretrained(model, tmp_path / "w", weights_only=True)
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["config.json", "model.safetensors"]
    torch.testing.assert_close(from_pretrained(tmp_path / "w").state_dict(), model.state_dict())


def test_a_transformers_tokenizer_is_accepted(exports, tmp_path, info):
    root, models = exports
    hf_tok = AutoTokenizer.from_pretrained(root / "mlm")  # a published folder's tokenizer, as a user holds it
    save_pretrained(models["clm"], tmp_path / "dec", tokenizer=hf_tok)
    assert AutoTokenizer.from_pretrained(tmp_path / "dec")(PROMPT).input_ids[-1] != info.sep_id


# ------------------------------------------------------------------------------------------ file modes
RECIPE = """
name: modes
seed: 0
model: {size: tiny}
data: {source: synthetic, vocab_size: 128}
train: {lr: 1e-3, global_batch_size: 4, micro_batch_size: 4, save_every_tokens: 0, progress: false,
        tensorboard: false}
phases:
  - {name: pretrain, tokens: 128, seq_len: 32, warmup_tokens: 0}
"""


def _modes(folder: Path) -> set[tuple[str, int]]:
    """(kind, permission bits) of the folder and everything in it."""
    items = [folder, *folder.rglob("*")]
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in items}


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def test_exports_follow_the_umask(info, tok, tmp_path, umask):
    model = make_model("mlm", info)
    save_pretrained(model, tmp_path / "open", tokenizer=tok)
    assert _modes(tmp_path / "open") == {("dir", 0o755), ("file", 0o644)}
    umask(0o077)
    save_pretrained(model, tmp_path / "private", tokenizer=tok)
    assert _modes(tmp_path / "private") == {("dir", 0o700), ("file", 0o600)}


def test_train_export_and_convert_folders_are_readable(tmp_path, umask):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run), "--objective", "clm"]) == 0
    last = ckpt.list_checkpoints(run)[-1]
    assert stat.S_IMODE(last.stat().st_mode) == 0o755  # checkpoints: a plain mkdir
    assert main(["export-hf", str(last), str(tmp_path / "exp")]) == 0
    assert main(["convert-objective", str(last), "--to", "mlm", "--out", str(tmp_path / "conv")]) == 0
    for folder in (run / "final", tmp_path / "exp", tmp_path / "conv"):
        assert _modes(folder) == {("dir", 0o755), ("file", 0o644)}, folder
    assert not list(tmp_path.glob(".*"))  # no temporary folder left beside them


# ---------------------------------------------------------------------------------------- import graph
SRC = Path(ettin.__file__).resolve().parents[1]  # the sources under test


def _imports(file: Path) -> set[str]:
    """Every ettin module a file imports, at the top or inside a function (a lazy import is an import)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    names = {n for n in names if n.startswith("ettin.")}
    return names | {n.rsplit(".", k)[0] for n in names for k in range(1, n.count("."))}  # + parent packages


def test_model_does_not_import_hf():
    graph = {}
    for file in (SRC / "ettin").rglob("*.py"):
        parts = file.relative_to(SRC).with_suffix("").parts
        graph[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = _imports(file)
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))
        return False

    assert "ettin.model" in graph["ettin.hf"]
    assert not any(reaches(dep, "ettin.hf") for dep in graph["ettin.hf"]), "an import cycle through ettin.hf"
