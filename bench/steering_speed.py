"""Per-token cost of HMM guidance against plain ``model.generate``, at h = 256, 1024, 4096 and batch 1 and 32.

The base model is a GPT-2 of the shape given (random weights: only the time matters) over a ``--vocab`` token
vocabulary; the HMMs are random, with a window of ``--new-tokens`` tokens, in each of ``--dtypes`` (the model
stays float32); the constraint is "contains all of 3 keywords". For every (h, HMM dtype, batch): plain generation
and guided generation of ``--new-tokens`` tokens (greedy, the same work as sampling), their per-token times, the
overhead per token and its ratio to the model's own per-token time, and the one-off cost of building the
constraint tables (the processor's constructor).

    flock /tmp/hmmlvd-cpu.lock python bench/steering_speed.py --threads 1 --out bench/results/steering_speed.json
"""
from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList

from hmmlvd import HMM, HMMConfig
from hmmlvd.constraints import HMMConstraintLogitsProcessor, all_of
from hmmlvd.io import atomic_write_json


def timed_generate(model, batch: int, new_tokens: int, processors, repeats: int) -> float:
    """Best-of-``repeats`` seconds of one ``generate`` call of ``new_tokens`` tokens for ``batch`` rows; the
    processors (``processors()``, whose constructor builds the constraint tables) are made before the clock starts."""
    inputs = torch.zeros(batch, 1, dtype=torch.long)
    best = float("inf")
    for _ in range(repeats):
        made = processors() if processors else LogitsProcessorList()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(inputs, attention_mask=torch.ones_like(inputs), do_sample=False,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
                           logits_processor=made)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--states", default="256,1024,4096")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="the HMM's dtypes (HMM.to(dtype=...))")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/steering_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=args.vocab, n_embd=args.width, n_layer=args.layers, n_head=args.width // 64,
                        n_positions=64, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    parameters = sum(p.numel() for p in model.parameters())
    n = args.new_tokens
    rows = []
    constraint = all_of([[11], [12, 13], [14]], args.vocab)
    for h, dtype in [(int(x), d) for x in args.states.split(",") for d in args.dtypes.split(",")]:
        hmm = HMM.random(HMMConfig(num_states=h, vocab_size=args.vocab, seq_len=n), seed=0).to(
            dtype=getattr(torch, dtype))
        for batch in [int(x) for x in args.batches.split(",")]:
            start = time.perf_counter()
            HMMConstraintLogitsProcessor(hmm, constraint, prompt_length=1, max_new_tokens=n)
            tables = time.perf_counter() - start
            plain = timed_generate(model, batch, n, None, args.repeats)
            guided = timed_generate(model, batch, n, lambda hmm=hmm: LogitsProcessorList(
                [HMMConstraintLogitsProcessor(hmm, constraint, prompt_length=1, max_new_tokens=n)]), args.repeats)
            overhead = (guided - plain) / n
            row = {"num_states": h, "hmm_dtype": dtype, "batch": batch, "plain_seconds_per_token": plain / n,
                   "guided_seconds_per_token": guided / n, "overhead_seconds_per_token": overhead,
                   "overhead_over_lm_forward": overhead / (plain / n), "table_seconds": tables}
            rows.append(row)
            print(f"h={h:<5} {dtype:<8} batch={batch:<3} LM {plain / n * 1e3:8.2f} ms/token  guided "
                  f"{guided / n * 1e3:8.2f} ms/token  overhead {overhead * 1e3:8.2f} ms/token ({row['overhead_over_lm_forward']:.2f}x the LM)"
                  f"  tables {tables:.2f} s", flush=True)
        del hmm
        gc.collect()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, {"config": {k: str(v) for k, v in vars(args).items()}, "lm_parameters": parameters,
                                 "threads": torch.get_num_threads(), "rows": rows,
                                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})


if __name__ == "__main__":
    main()
