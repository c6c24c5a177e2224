from hmmlvd.data import Vocab
from hmmlvd.lvd import detokenize, suffix_texts


def test_detokenize_undoes_wikitext_separators_and_maps_special_words():
    text = "1 @,@ 000 km @-@ long , 3 @.@ 5 <unk> end <eos>"
    assert detokenize(text, "[UNK]", "[SEP]") == "1,000 km-long , 3.5 [UNK] end [SEP]"


def test_suffix_texts_of_a_word_vocabulary_cover_every_start_position():
    vocab = Vocab.from_corpus(["a @-@ b <unk>"])
    ids = vocab.encode("a @-@ b <unk>")
    assert suffix_texts(ids, vocab, "[UNK]", "[SEP]") == ["a-b [UNK]", "-b [UNK]", "b [UNK]", "[UNK]"]


class CharTokenizer:
    """A sub-word stand-in: one id per character, decoded by concatenation."""

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_suffix_texts_of_other_tokenizers_decode_each_suffix():
    ids = [ord(c) for c in "ab c"]
    assert suffix_texts(ids, CharTokenizer(), "?", "|") == ["ab c", "b c", " c", "c"]
