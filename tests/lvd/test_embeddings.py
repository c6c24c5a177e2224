import torch
from transformers import AutoModel, AutoTokenizer

from hmmlvd.data import Vocab, windows
from hmmlvd.lvd import SuffixEncoder, embed_windows, stream_hash, suffix_texts


def reference_embedding(folder: str, text: str) -> torch.Tensor:
    """Mean of the last hidden states of one unpadded text (special tokens included)."""
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].mean(0)


def test_batched_length_sorted_embeddings_match_one_by_one(tiny_encoder):
    encoder = SuffixEncoder(tiny_encoder, device="cpu", batch_size=2)
    texts = ["a much longer text with many words in it", "short", "two words", "x"]
    batched = encoder.embed(texts)
    for row, text in zip(batched, texts):
        assert torch.allclose(row, reference_embedding(tiny_encoder, text), atol=1e-5)  # padding is masked out


def corpus():
    lines = [" ".join(f"w{(i * 7 + j) % 23}" for j in range(i % 9)) for i in range(60)]
    lines[3] += " 1 @,@ 000 <unk>"
    vocab = Vocab.from_corpus(lines)
    stream = torch.tensor([i for line in lines for i in vocab.encode_line(line)])
    return vocab, stream


def test_embed_windows_orders_rows_by_window_and_position(tiny_encoder, tmp_path):
    vocab, stream = corpus()
    train = windows(stream, 8, 8)
    encoder = SuffixEncoder(tiny_encoder, device="cpu")
    ids = torch.tensor([5, 0, 2])
    embedded, stats = embed_windows(train, ids, vocab, encoder, "k", cache_dir=False, progress=False)
    assert embedded.shape == (3, 8, encoder.dim) and embedded.dtype == torch.float16
    assert stats.num_suffixes_computed == 24
    text = suffix_texts(train[5].tolist(), vocab, encoder.unk_token, encoder.eos_token)[3]
    assert torch.allclose(embedded[0, 3].float(), reference_embedding(tiny_encoder, text), atol=2e-3)  # fp16


def test_cache_is_reused_across_runs_and_keyed_by_data(tiny_encoder, tmp_path):
    vocab, stream = corpus()
    train = windows(stream, 8, 8)
    encoder = SuffixEncoder(tiny_encoder, device="cpu")
    key = stream_hash(stream) + ":8:8"
    first, stats = embed_windows(train, torch.tensor([1, 3]), vocab, encoder, key, cache_dir=tmp_path,
                                 progress=False)
    assert stats.num_suffixes_computed == 16
    again, stats = embed_windows(train, torch.tensor([3, 1, 4]), vocab, encoder, key, cache_dir=tmp_path,
                                 progress=False)
    assert stats.num_suffixes_computed == 8  # only window 4 is new
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])
    _, stats = embed_windows(train, torch.tensor([1]), vocab, encoder, "other-data", cache_dir=tmp_path,
                             progress=False)
    assert stats.num_suffixes_computed == 8  # another data key does not see those shards
    assert stream_hash(stream) != stream_hash(stream.flip(0))
