"""Two gloo processes (torch.multiprocessing, CPU) give what one process gives at every LVD stage:
K-means, the closed-form counts and both perplexity protocols; the embedding cache written by the
ranks' shards reads as one cache."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hmmlvd.data import Vocab, windows
from hmmlvd.distributed import process_group_from_env, shard, shard_bounds
from hmmlvd.evaluate import log_likelihood
from hmmlvd.io import load_tensors, save_tensors
from hmmlvd.lvd import (DistillConfig, KMeansConfig, SuffixEncoder, cluster_positions, distill, embed_windows,
                        torch_kmeans)
from hmmlvd.lvd.closed_form import closed_form_hmm
from tests.two_gloo import run_on_two_ranks

KMEANS = KMeansConfig(4, iterations=8, seed=2, restarts=2)


def points():
    """Four overlapping blobs (ambiguous enough that seeding and every Lloyd step matter) [203, 3]."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 3, generator=generator) * 2
    return torch.cat([centres[i % 4] + torch.randn(1, 3, generator=generator) for i in range(203)])


def tokens_and_states():
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 7, (41, 6), generator=generator), torch.randint(0, 3, (41, 6), generator=generator)


def text_corpus():
    lines = [" ".join(f"w{(i * 5 + j) % 17}" for j in range(1 + i % 7)) + " @-@ x <unk>" for i in range(20)]
    vocab = Vocab.from_corpus(lines)
    return vocab, windows(torch.tensor([i for line in lines for i in vocab.encode_line(line)]), 8, 8)


def every_stage() -> dict:
    """Each stage on this rank's part of the data (all of it in one process)."""
    labels, centroids = torch_kmeans(shard(points()), KMEANS)
    position_labels, _ = cluster_positions(shard(torch.stack([points(), points().flip(0)], 1)),
                                           KMeansConfig(4, iterations=5, backend="torch"), progress=False)
    tokens, states = tokens_and_states()
    hmm = closed_form_hmm(shard(tokens), shard(states), 3, 7, pseudocount=0.5, dtype=torch.float64)
    stream = torch.randint(0, 7, (53,), generator=torch.Generator().manual_seed(4))
    result = {"labels": labels, "centroids": centroids, "position_labels": position_labels,
              **{f"hmm.{name}": group.values for name, group in hmm.parameter_groups().items()},
              **{protocol: torch.tensor(log_likelihood(hmm, stream, protocol, batch_size=5, progress=False))
                 for protocol in ("chunk", "sliding")}}
    return result


def test_two_gloo_processes_match_one(tmp_path):
    ranks = run_on_two_ranks(every_stage, tmp_path)
    single = every_stage()
    # each rank holds the assignments of its own points only; together they are the single-process ones
    for name in ("labels", "position_labels"):
        assert torch.equal(torch.cat([ranks[0][name], ranks[1][name]]), single[name])
    for name, value in single.items():
        if name.startswith("hmm.") or name in ("centroids", "chunk", "sliding"):
            for part in ranks:     # every rank holds the same centroids, HMM and log-likelihoods
                torch.testing.assert_close(part[name], value, rtol=1e-12 if name != "centroids" else 1e-6,
                                           atol=1e-12 if name != "centroids" else 1e-6)


def test_cache_shards_of_two_ranks_read_as_one_cache(tmp_path, tiny_encoder):
    vocab, train = text_corpus()
    encoder, ids = SuffixEncoder(tiny_encoder, device="cpu", dtype="float32"), torch.arange(len(train))
    for rank in range(2):      # what each rank of a 2-process run embeds and writes (no collective involved)
        _, stats = embed_windows(train, shard(ids, rank, 2), vocab, encoder, "k", cache_dir=tmp_path / "cache",
                                 progress=False)
        assert stats.num_suffixes_computed == len(shard(ids, rank, 2)) * train.shape[1]
    cached, stats = embed_windows(train, torch.arange(len(train)), vocab, encoder, "k", cache_dir=tmp_path / "cache",
                                  progress=False)   # the two ranks' shards read as one cache
    assert stats.num_suffixes_computed == 0
    fresh, _ = embed_windows(train, torch.arange(len(train)), vocab, encoder, "k", cache_dir=False, progress=False)
    torch.testing.assert_close(cached.float(), fresh.float(), atol=1e-3, rtol=0)


def test_shards_cover_the_items_in_order_without_overlap():
    for num_items in (0, 1, 7, 10):
        for world_size in (1, 2, 3):
            bounds = [shard_bounds(num_items, rank, world_size) for rank in range(world_size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == num_items
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(stop - start for start, stop in bounds) - min(stop - start for start, stop in bounds) <= 1
    with pytest.raises(ValueError, match="rank must be"):
        shard_bounds(5, 2, 2)


def test_process_group_from_env_is_a_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with process_group_from_env() as (rank, world_size):
        assert (rank, world_size) == (0, 1) and not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        with process_group_from_env():
            pass


def _distill(encoder_path, cache_dir):
    vocab, train = text_corpus()
    config = DistillConfig(3, kmeans_iterations=4, seed=1, cache_dir=str(cache_dir), kmeans_backend="torch")
    encoder = SuffixEncoder(encoder_path, device="cpu", dtype="float32")
    hmm, stats = distill(train, vocab, config, "k", encoder=encoder, progress=False)
    return {name: group.values for name, group in hmm.parameter_groups().items()}, stats


def _distill_worker(rank, init_file, out_dir, encoder_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    parameters, stats = _distill(encoder_path, out_dir / "cache2")
    assert stats.embedding.num_suffixes_computed == len(shard(torch.arange(len(text_corpus()[1])))) * 8
    save_tensors(out_dir / f"distill{rank}.safetensors", parameters)
    dist.destroy_process_group()


def test_distill_under_two_processes_matches_one(tmp_path, tiny_encoder):
    mp.spawn(_distill_worker, args=(str(tmp_path / "init"), tmp_path, str(tiny_encoder)), nprocs=2, join=True)
    single, _ = _distill(str(tiny_encoder), tmp_path / "cache1")
    for rank in range(2):
        part = load_tensors(tmp_path / f"distill{rank}.safetensors")[0]
        for name, value in single.items():
            torch.testing.assert_close(part[name], value, rtol=0, atol=1e-6)
