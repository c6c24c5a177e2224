import pytest

from hmmlvd.data import Vocab


def test_from_corpus_orders_by_first_appearance_and_adds_eos_and_unk():
    vocab = Vocab.from_corpus(["a b a", "", "c"])
    assert vocab.words == ["a", "b", "<eos>", "c", "<unk>"]
    assert vocab.encode("a c zzz") == [0, 3, vocab.unk_id]
    assert vocab.encode_line("b") == [1, vocab.eos_id]
    assert vocab.decode([0, 1, 2]) == "a b <eos>"


def test_min_count_maps_rare_words_to_unk():
    vocab = Vocab.from_corpus(["a a b"], min_count=2)
    assert vocab.encode("a b") == [0, vocab.unk_id]


def test_save_load_round_trip(tmp_path):
    vocab = Vocab.from_corpus(["x y <unk> z"])
    vocab.save(tmp_path)
    loaded = Vocab.load(tmp_path)
    assert loaded.words == vocab.words and loaded.unk_id == vocab.unk_id and loaded.eos_id == vocab.eos_id


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="twice"):
        Vocab(["a", "a", "<unk>", "<eos>"])
    with pytest.raises(ValueError, match="<unk>"):
        Vocab(["a", "<eos>"])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Vocab.from_corpus(["a"]).decode([99])
    (tmp_path / "tokenizer.json").write_text('{"type": "hf"}')
    with pytest.raises(ValueError, match="not a word vocabulary"):
        Vocab.load(tmp_path)
