import pytest
import torch

from hmmlvd import HMM
from hmmlvd.data import Vocab, windows
from hmmlvd.lvd import DistillConfig, KMeansConfig, SuffixEncoder, cluster_positions, distill, embed_windows
from hmmlvd.lvd import select_windows


def test_select_windows_is_seeded_and_nested():
    small, large = select_windows(100, 10, seed=3), select_windows(100, 30, seed=3)
    assert torch.equal(small, select_windows(100, 10, seed=3))
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.equal(select_windows(100, None, 0), torch.arange(100))


def test_config_rejects_fewer_windows_than_states():
    with pytest.raises(ValueError, match="below num_states"):
        DistillConfig(num_states=16, num_windows=8)


def test_distill_is_the_closed_form_fit_of_the_cluster_assignments(tiny_encoder, tmp_path):
    lines = [" ".join(f"w{(i * 5 + j) % 17}" for j in range(i % 11)) for i in range(80)]
    vocab = Vocab.from_corpus(lines)
    stream = torch.tensor([i for line in lines for i in vocab.encode_line(line)])
    train = windows(stream, 8, 8)
    config = DistillConfig(num_states=3, num_windows=20, encoder=tiny_encoder, kmeans_iterations=10,
                           cache_dir=str(tmp_path))
    hmm, stats = distill(train, vocab, config, "key", progress=False)
    assert stats.num_windows == 20 and stats.embedding.num_suffixes_computed == 160
    # independent recomputation: the same subsample, embeddings (now cached) and K-means
    ids = select_windows(len(train), 20, 0)
    embedded, again = embed_windows(train, ids, vocab, SuffixEncoder(tiny_encoder), "key", cache_dir=tmp_path,
                                    progress=False)
    assert again.num_suffixes_computed == 0
    states, _ = cluster_positions(embedded, KMeansConfig(3, 10, 0), progress=False)
    expected = HMM.from_complete_data(train[ids], states, 3, vocab.vocab_size, pseudocount=0.1)
    for name in ("initial", "transitions", "emissions"):
        assert torch.allclose(getattr(hmm, name), getattr(expected, name), atol=1e-6)
