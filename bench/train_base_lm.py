"""Train the small GPT-2 that the steering benchmark uses as its base LM, on WikiText-2, within a wall-time budget.

No pretrained causal LM is reachable offline, so this trains one with ``transformers``: a byte-level BPE
tokenizer (``--vocab-size`` tokens, trained on the training split) and a GPT-2 of ``--layers`` x ``--width``,
on random ``--context``-token blocks of the training stream (every line followed by ``<|endoftext|>``) for
``--minutes`` of wall time (the learning rate decays linearly to 0 over the steps that fit, measured after
the first 20), or for exactly ``--steps`` steps (the same model on any machine, given the same thread count). It saves the model and tokenizer (``save_pretrained``) to ``--out`` and prints the test
perplexity per BPE token (disjoint blocks) and per WikiText word (the same log-likelihood over the word count).

    flock /tmp/hmmlvd-cpu.lock python bench/train_base_lm.py --data-dir DATA --out runs/base-lm --minutes 25
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from hmmlvd.data import read_lines
from hmmlvd.io import atomic_write_json

EOS = "<|endoftext|>"


def train_tokenizer(lines: list[str], vocab_size: int):
    """A byte-level BPE (GPT-2's scheme) trained on ``lines``, as a transformers fast tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([line for line in lines if line.strip()], vocab_size=vocab_size, min_frequency=2,
                            special_tokens=[EOS], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS,
                                   pad_token=EOS)


def encode(lines: list[str], tokenizer) -> torch.Tensor:
    """One stream: every non-empty line's ids, then the end-of-text id."""
    ids: list[int] = []
    for line in lines:
        if line.strip():
            ids += tokenizer.encode(line.strip(), add_special_tokens=False) + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def evaluate(model, stream: torch.Tensor, context: int, batch_size: int = 64) -> float:
    """Total negative log-likelihood (nats) of ``stream`` in disjoint ``context``-token blocks."""
    usable = (len(stream) // context) * context
    blocks = stream[:usable].view(-1, context)
    total = 0.0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            batch = blocks[start:start + batch_size]
            logits = model(batch).logits[:, :-1].float()
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"))
    model.train()
    return total, blocks[:, 1:].numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--steps", type=int, default=None, help="train exactly this many steps (overrides --minutes)")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=Path("bench/results/base_lm.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from transformers import GPT2Config, GPT2LMHeadModel

    lines, _ = read_lines(args.data_dir)
    tokenizer = train_tokenizer(lines["train"], args.vocab_size)
    train, test = encode(lines["train"], tokenizer), encode(lines["test"], tokenizer)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=args.context, n_embd=args.width,
                        n_layer=args.layers, n_head=max(1, args.width // 64), bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(args.seed)
    budget, start, step, total_steps, warmup = args.minutes * 60, time.perf_counter(), 0, None, 50
    print(f"train {len(train)} tokens, test {len(test)}, vocab {len(tokenizer)}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters", flush=True)
    while total_steps is None or step < total_steps:
        offsets = torch.randint(0, len(train) - args.context, (args.batch_size,), generator=generator)
        batch = train[offsets[:, None] + torch.arange(args.context)]
        scale = min(1.0, (step + 1) / warmup) * (1.0 if total_steps is None else max(0.0, 1 - step / total_steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * scale
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step == 20:
            total_steps = args.steps or int(budget / ((time.perf_counter() - start) / 20))
            print(f"{total_steps} steps fit in {args.minutes} min", flush=True)
        if step % 200 == 0:
            print(f"step {step}/{total_steps} loss {float(loss):.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - start
    nll, count = evaluate(model, test, args.context)
    words = sum(len(line.split()) + 1 for line in lines["test"] if line.strip())
    test_tokens = len(test) - 1
    result = {"config": vars(args) | {"out": str(args.out), "results": str(args.results)},
              "parameters": sum(p.numel() for p in model.parameters()), "steps": step,
              "train_seconds": train_seconds, "train_tokens_seen": step * args.batch_size * args.context,
              "test_perplexity_per_token": math.exp(nll / count), "test_tokens_scored": count,
              "test_perplexity_per_word": math.exp(nll / count * test_tokens / words),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(result, indent=1), flush=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.results, result)


if __name__ == "__main__":
    main()
