"""The embedding cache refuses damaged shards with a ValueError naming the shard and the fix."""
import pytest
import torch

from hmmlvd.io import save_tensors
from hmmlvd.lvd.embeddings import EmbeddingCache


@pytest.fixture
def cache(tmp_path):
    cache = EmbeddingCache(tmp_path, {"encoder": "test", "data": "abc"})
    cache.add(torch.tensor([3, 1, 4]), torch.randn(3, 2, 5))
    (shard,) = cache.folder.glob("shard-*.safetensors")
    return cache, shard


def test_an_intact_shard_is_read_back(cache):
    cache, _ = cache
    found, missing = cache.lookup(torch.tensor([1, 4, 9]))
    assert sorted(found) == [1, 4] and missing.tolist() == [9]
    assert found[1].shape == (2, 5) and found[1].dtype == torch.float16


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_shard_file_is_refused(cache, damage):
    cache, shard = cache
    data = shard.read_bytes()
    shard.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"\x80\x04 not a shard", "empty": b""}[damage])
    with pytest.raises(ValueError, match=f"embedding cache shard {shard} is damaged .*delete it and rerun"):
        cache.lookup(torch.tensor([1]))


@pytest.mark.parametrize("tensors", [{"window_ids": torch.tensor([1, 2])},
                                     {"window_ids": torch.tensor([1, 2]), "embeddings": torch.zeros(3, 2, 5)},
                                     {"window_ids": torch.tensor([[1, 2]]), "embeddings": torch.zeros(1, 2, 5)},
                                     {"window_ids": torch.tensor([1]), "embeddings": torch.full((1, 2, 5), float("nan"))},
                                     {"window_ids": torch.tensor([1]), "embeddings": torch.ones(1, 2, 5, dtype=torch.long)}])
def test_a_shard_with_missing_or_mismatched_tensors_is_refused(cache, tensors):
    cache, shard = cache
    save_tensors(shard, tensors)
    with pytest.raises(ValueError, match="is damaged"):
        cache.lookup(torch.tensor([1]))
