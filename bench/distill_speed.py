"""Suffix embedding throughput of the previous per-suffix path next to the tokenise-once path, in one run;
then (optionally) torch K-means in 1 process against 2 gloo processes on the embeddings.

The reference below is the embedding path as it was before tokenise-once: every suffix text tokenised on its
own, batches padded in the loop, no background thread. It lives here only to be measured against.
Three rows embed the same seeded WikiText-2 training windows with the same encoder, alternating, and each
figure is the best of ``--repeats`` timings: the previous path (fp32), tokenise-once in fp32, and tokenise-once
at the library's default precision (``--encoder-dtype auto``: bf16 autocast on CPUs with AMX / AVX512-BF16,
fp32 elsewhere). The last row also reports how close its embeddings are to fp32: cosine, and the share of
suffixes that land in the same K-means cluster (centroids fitted on the fp32 embeddings).

    flock /tmp/hmmlvd-cpu.lock python bench/distill_speed.py --windows 64 --threads 2
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hmmlvd.data import wikitext2, windows
from hmmlvd.lvd import KMeansConfig, SuffixEncoder, select_windows, suffix_texts, torch_kmeans
from hmmlvd.lvd.encoder import _padded_batch


def reference_embed(encoder: SuffixEncoder, window_rows: torch.Tensor, tokenizer) -> torch.Tensor:
    """The previous path: per-suffix texts, each tokenised alone, length-sorted batches padded inline."""
    texts = [text for row in window_rows.tolist()
             for text in suffix_texts(row, tokenizer, encoder.unk_token, encoder.eos_token)]
    encoded = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    out = torch.empty(len(texts), encoder.dim)
    with torch.inference_mode():
        for start in range(0, len(order), encoder.batch_size):
            rows = order[start:start + encoder.batch_size]
            ids, mask = _padded_batch([encoded[i] for i in rows], encoder.tokenizer.pad_token_id or 0)
            hidden = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.to(hidden.dtype).unsqueeze(-1)
            out[torch.tensor(rows)] = ((hidden * weights).sum(1) / weights.sum(1)).float()
    return out


def tokenise_once_embed(encoder: SuffixEncoder, window_rows: torch.Tensor, tokenizer) -> torch.Tensor:
    """The library path of :func:`hmmlvd.lvd.embed_windows` without the cache."""
    texts = [suffix_texts(row, tokenizer, encoder.unk_token, encoder.eos_token) for row in window_rows.tolist()]
    return encoder.embed_token_ids(encoder.suffix_token_ids(texts))


def host_seconds(encoder: SuffixEncoder, window_rows: torch.Tensor, tokenizer) -> tuple[float, float]:
    """Seconds to tokenise every suffix: one by one, and cut from one tokenisation per window."""
    texts = [suffix_texts(row, tokenizer, encoder.unk_token, encoder.eos_token) for row in window_rows.tolist()]
    start = time.perf_counter()
    encoder.token_ids([text for suffixes in texts for text in suffixes])
    middle = time.perf_counter()
    encoder.suffix_token_ids(texts)
    return middle - start, time.perf_counter() - middle


def _kmeans_worker(rank: int, world_size: int, init_file: str, points: torch.Tensor, config: KMeansConfig,
                   out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    part = points.chunk(world_size)[rank]
    dist.barrier()
    start = time.perf_counter()
    labels, _ = torch_kmeans(part, config)
    dist.barrier()
    seconds = time.perf_counter() - start
    gathered = [torch.empty(len(points.chunk(world_size)[r]), dtype=torch.long) for r in range(world_size)]
    dist.all_gather(gathered, labels)
    if rank == 0:
        out["seconds"], out["labels"] = seconds, torch.cat(gathered)
    dist.destroy_process_group()


def kmeans_processes(points: torch.Tensor, config: KMeansConfig) -> tuple[float, torch.Tensor]:
    with tempfile.TemporaryDirectory() as folder, mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_kmeans_worker, args=(2, os.path.join(folder, "init"), points, config, out), nprocs=2, join=True)
        return out["seconds"], out["labels"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=64, help="WikiText-2 training windows (32 suffixes each)")
    parser.add_argument("--repeats", type=int, default=2, help="timings per path (the best is reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--kmeans-clusters", type=int, default=64, help="0 skips the K-means comparison")
    parser.add_argument("--data-dir", help="WikiText-2 folder (default $HMMLVD_DATA)")
    args = parser.parse_args()
    if args.windows < 1 or args.repeats < 1 or args.threads < 1 or args.kmeans_clusters < 0:
        parser.error("--windows, --repeats and --threads must be >= 1, --kmeans-clusters >= 0")
    torch.set_num_threads(args.threads)
    corpus = wikitext2(args.data_dir)
    train = windows(corpus.train, 32, 32)
    rows = train[select_windows(len(train), args.windows, seed=0)]
    encoders = {"per-suffix, fp32 (before)": SuffixEncoder(device="cpu", dtype="float32")}
    encoders["tokenise once, fp32"] = encoders["per-suffix, fp32 (before)"]
    default = SuffixEncoder(device="cpu")
    encoders[f"tokenise once, auto = {default.precision} (now)"] = default
    functions = (reference_embed, tokenise_once_embed, tokenise_once_embed)
    num_suffixes = rows.numel()
    for (name, encoder), function in zip(encoders.items(), functions):       # warm-up
        function(encoder, rows[:2], corpus.tokenizer)
    best, results = {name: float("inf") for name in encoders}, {}
    for _ in range(args.repeats):
        for (name, encoder), function in zip(encoders.items(), functions):
            start = time.perf_counter()
            results[name] = function(encoder, rows, corpus.tokenizer)
            best[name] = min(best[name], time.perf_counter() - start)
    before = best["per-suffix, fp32 (before)"]
    reference, exact, low = results.values()
    one_by_one, cut = host_seconds(encoders["tokenise once, fp32"], rows, corpus.tokenizer)
    print(f"{args.windows} windows = {num_suffixes} suffixes, {args.threads} threads, MiniLM-L6 on the CPU "
          f"({torch.backends.cpu.get_cpu_capability()})")
    print("| path | s | suffixes/s | vs before | tokenising µs/suffix |")
    print("|---|---:|---:|---:|---:|")
    for (name, seconds), host in zip(best.items(), (one_by_one, cut, cut)):
        print(f"| {name} | {seconds:.2f} | {num_suffixes / seconds:.1f} | {before / seconds:.2f}x "
              f"| {1e6 * host / num_suffixes:.1f} |")
    print(f"tokenise once, fp32: max |embedding difference| to before {(exact - reference).abs().max().item():.2e}; "
          f"tokenising {one_by_one / cut:.1f}x faster")
    cosine = torch.nn.functional.cosine_similarity(low, exact, dim=1)
    centroids = torch_kmeans(exact, KMeansConfig(min(64, len(exact)), iterations=20, seed=0, backend="torch"))[1]
    same = (torch.cdist(low, centroids).argmin(1) == torch.cdist(exact, centroids).argmin(1)).float().mean()
    print(f"{default.precision} vs fp32: cosine min {cosine.min():.6f}, mean {cosine.mean():.6f}; "
          f"same nearest of 64 fp32 K-means centroids for {100 * same:.2f}% of suffixes")
    if args.kmeans_clusters:
        points = exact
        config = KMeansConfig(args.kmeans_clusters, iterations=20, seed=0, backend="torch")
        start = time.perf_counter()
        labels, _ = torch_kmeans(points, config)
        single = time.perf_counter() - start
        torch.set_num_threads(args.threads)
        double, double_labels = kmeans_processes(points, config)
        print(f"torch K-means k={args.kmeans_clusters} on {len(points)} x {points.shape[1]} points, 20 iterations: "
              f"1 process ({args.threads} threads) {single:.2f} s, 2 gloo processes (1 thread each) {double:.2f} s, "
              f"same assignments: {bool(torch.equal(labels, double_labels))}")


if __name__ == "__main__":
    main()
