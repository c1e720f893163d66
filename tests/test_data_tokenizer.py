import json

import pytest
from transformers import AutoTokenizer

from ettin.cli import main
from ettin.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer


def _texts(shared_data, n=60):
    with open(shared_data / "pretrain" / "moby_dick_chapters.jsonl") as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n))]


def test_modernbert_tokenizer_ids(shared_data):
    info = load_tokenizer(shared_data / "modernbert_tokenizer")
    assert info.encode("The capital of France is [MASK].", add_special_tokens=True) == [
        50281, 510, 5347, 273, 6181, 310, 50284, 15, 50282,
    ]  # fmt: skip
    assert (info.cls_id, info.sep_id, info.pad_id, info.mask_id, info.unk_id) == (
        50281,
        50282,
        50283,
        50284,
        50280,
    )
    assert (info.bos_id, info.eos_id) == (info.cls_id, info.sep_id)
    assert info.vocab_size == 50368
    assert info.encode_batch(["The capital", ""])[0].tolist() == [510, 5347]
    assert len(info.encode_batch([""])[0]) == 0


def test_hash_is_stable_and_distinguishes(shared_data, tmp_path):
    by_folder = load_tokenizer(shared_data / "modernbert_tokenizer")
    by_file = load_tokenizer(shared_data / "modernbert_tokenizer" / "tokenizer.json")
    assert by_folder.sha256 == by_file.sha256 == load_tokenizer().sha256
    # Whitespace / key order do not change the hash; content does.
    doc = json.loads((shared_data / "modernbert_tokenizer" / "tokenizer.json").read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    assert load_tokenizer(tmp_path).sha256 == by_file.sha256
    doc["normalizer"] = None
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    assert load_tokenizer(tmp_path).sha256 != by_file.sha256


def test_gpt2_vocab_merges_folder(shared_data):
    info = load_tokenizer(shared_data / "gpt2_tokenizer")
    assert info.eos_id == 50256 and info.mask_id is None
    assert info.vocab_size == 50304  # 50257 padded to a multiple of 64


def test_bad_tokenizer_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer.json"):
        load_tokenizer(tmp_path / "tokenizer.json")


def test_train_pads_vocab_and_transformers_loads_it(shared_data, tmp_path):
    tokenizer = train_tokenizer(_texts(shared_data), vocab_size=500)
    assert tokenizer.get_vocab_size() % 64 == 0 and tokenizer.get_vocab_size() >= 500
    out = save_tokenizer(tokenizer, tmp_path / "tok")
    info = load_tokenizer(out)
    assert info.vocab_size == tokenizer.get_vocab_size()
    assert [tokenizer.id_to_token(i) for i in (info.unk_id, info.cls_id, info.sep_id, info.pad_id, info.mask_id)] == [
        "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]",
    ]  # fmt: skip
    text = "Call me Ishmael. Some years ago"
    ids = info.encode(text, add_special_tokens=True)
    assert ids[0] == info.cls_id and ids[-1] == info.sep_id
    assert info.decode(ids[1:-1]) == text  # byte-level: lossless

    hf = AutoTokenizer.from_pretrained(str(out))
    assert (hf.cls_token, hf.sep_token, hf.pad_token, hf.mask_token, hf.unk_token) == (
        "[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]",
    )  # fmt: skip
    assert (hf.cls_token_id, hf.sep_token_id, hf.pad_token_id, hf.mask_token_id) == (
        info.cls_id, info.sep_id, info.pad_id, info.mask_id,
    )  # fmt: skip
    assert hf(text)["input_ids"] == ids
    pair = hf("a b", "c")["input_ids"]
    assert pair[0] == info.cls_id and pair.count(info.sep_id) == 2 and pair[-1] == info.sep_id
    assert len(hf) == info.vocab_size


def test_cli_tokenizer_train(shared_data, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"body": t}) + "\n" for t in _texts(shared_data, 30)))
    out = tmp_path / "tok"
    assert (
        main(["tokenizer", "train", "--sources", f"{corpus}:body", "--vocab-size", "300", "--out", str(out)])
        == 0
    )
    assert load_tokenizer(out).vocab_size == 320
    assert main(["tokenizer", "train", "--sources", str(tmp_path / "missing.jsonl"), "--vocab-size", "300",
                 "--out", str(out)]) == 2  # fmt: skip
    assert "missing.jsonl" in capsys.readouterr().err


def test_gpt2_folder_is_built_as_the_library_builds_it(shared_data):
    """vocab.json + merges.txt through public classes only: the same tokenizer as tokenizers' ByteLevelBPETokenizer."""
    from tokenizers import ByteLevelBPETokenizer

    folder = shared_data / "gpt2_tokenizer"
    theirs = ByteLevelBPETokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    assert load_tokenizer(folder).tokenizer.to_str() == theirs.to_str()
