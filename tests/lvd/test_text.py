from hmmlvd.lvd import detokenize, suffix_texts
from hmmlvd.lvd.text import window_words
from hmmlvd.data import Vocab


def test_detokenize_undoes_wikitext_separators_and_maps_special_words():
    text = "1 @,@ 000 km @-@ long , 3 @.@ 5 <unk> end <eos>"
    assert detokenize(text, "[UNK]", "[SEP]") == "1,000 km-long , 3.5 [UNK] end [SEP]"


def test_suffix_texts_cover_every_start_position():
    assert suffix_texts(["a", "@-@", "b"], "[UNK]", "[SEP]") == ["a-b", "-b", "b"]


def test_window_words_of_a_word_vocabulary():
    vocab = Vocab.from_corpus(["x y"])
    assert window_words(vocab.encode("y x"), vocab) == ["y", "x"]
