"""The same HMM in hmmlvd and in pyjuice 2.6.3: forward, forward–backward and one EM update, on one device.

For each kind (homogeneous, non-homogeneous) and h, one child process builds one random HMM
(T = 32, V = 33,279) and runs it in hmmlvd, frees it, then compiles the same parameters with
``pyjuice.structures.HMM`` and runs them in pyjuice, on the same [B, T] batch of random token ids:

* fwd: log p(x) of the batch (hmmlvd ``HMM.log_likelihood``; pyjuice ``pc(x)``);
* fb: log p(x) plus the expected counts (hmmlvd ``HMM.accumulate_counts`` into zeroed count buffers;
  pyjuice ``pc(x)`` then ``pc.backward(x, flows_memory=0.0)``, which zeroes its parameter flows first);
* em: counts from scratch plus the M-step at step size 1 (hmmlvd: what ``hmmlvd.em`` does per update,
  ``zero_counts``, ``accumulate_counts``, ``apply_m_step(..., overwrite_counts=True)``; pyjuice: fb then
  ``pc.mini_batch_em(step_size=1.0, pseudocount=...)``). Both smooth with ``(n + c/K) / (N + c)``.

pyjuice's ``HMM`` takes one set of tables; with ``homogeneous=False`` it copies them, untied, to every
position. The non-homogeneous hmmlvd model therefore repeats the same tables at every position too (its
tables are still separate tensors, updated separately by EM, so the work and memory are those of a
general non-homogeneous HMM).

Times are the median of ``--repeats`` calls after ``--warmup`` calls, each ended by
``torch.cuda.synchronize()``. Memory is ``torch.cuda.max_memory_allocated`` during those calls
(reset before each measurement) minus what was allocated before the library built its model: the
model, the library's persistent buffers and its transient peak. Ratios are pyjuice / hmmlvd, so > 1
means hmmlvd is faster or smaller. Honesty check: the largest |log p(x) difference| over the batch,
from the same parameters (before) and after one EM update from them (after).

pyjuice runs only on CUDA (Triton kernels); on a CPU, or when ``import pyjuice`` fails, its columns
are skipped with the reason printed, and the memory columns need CUDA too.

    python bench/pyjuice_hmm.py --states 512 1024 2048 4096 --batch 512 --json pyjuice_hmm.json
"""
from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import statistics
import subprocess
import sys
import time

import torch

KINDS = ("homogeneous", "non-homogeneous")
OPERATIONS = ("fwd", "fb", "em")


class Meter:
    """Median seconds and peak CUDA memory (GiB above ``base``) of a function on one device."""

    def __init__(self, device: torch.device, warmup: int, repeats: int):
        self.device, self.warmup, self.repeats = device, warmup, repeats
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.cuda else 0

    def __call__(self, function, base: int) -> dict:
        for _ in range(self.warmup):
            function()
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        times = []
        for _ in range(self.repeats):
            start = time.perf_counter()
            function()
            self.sync()
            times.append(time.perf_counter() - start)
        peak = (torch.cuda.max_memory_allocated(self.device) - base) / 2 ** 30 if self.cuda else None
        return {"seconds": statistics.median(times), "peak_gib": peak}


def random_tables(num_states: int, vocab_size: int, seed: int) -> dict:
    """One set of HMM tables on the CPU: initial [h], transitions [h, h], emissions [V, h] (hmmlvd's layout)."""
    from hmmlvd import HMM, HMMConfig

    model = HMM.random(HMMConfig(num_states, vocab_size, 2, homogeneous=True), seed=seed)
    return {"initial": model.initial, "transitions": model.transitions[0], "emissions": model.emissions[0]}


def run_hmmlvd(tables: dict, tokens: torch.Tensor, kind: str, seq_len: int, args, meter: Meter) -> dict:
    from hmmlvd import HMM, HMMConfig
    from hmmlvd.em import apply_m_step

    homogeneous = kind == "homogeneous"
    positions = 1 if homogeneous else seq_len
    base = meter.allocated()
    device = meter.device
    hmm = HMM(HMMConfig(tables["emissions"].shape[1], tables["emissions"].shape[0], seq_len, homogeneous),
              initial=tables["initial"].to(device),
              transitions=tables["transitions"].to(device).expand(max(positions - 1, 1), -1, -1).contiguous(),
              emissions=tables["emissions"].to(device).expand(positions, -1, -1).contiguous())
    hmm.allow_tf32 = args.tf32
    tokens = tokens.to(device)
    result = {"ll_before": hmm.log_likelihood(tokens).cpu(),
              "model_gib": (meter.allocated() - base) / 2 ** 30 if meter.cuda else None}
    result["fwd"] = meter(lambda: hmm.log_likelihood(tokens), base)

    counts = hmm.zero_counts()

    def forward_backward():
        for value in counts.values():
            value.zero_()
        hmm.accumulate_counts(tokens, counts)

    result["fb"] = meter(forward_backward, base)
    del counts

    def em_update():
        fresh = hmm.zero_counts()      # the M-step below consumes these buffers, as in hmmlvd.em
        hmm.accumulate_counts(tokens, fresh)
        hmm.set_parameters(apply_m_step(hmm.parameter_groups(), fresh, pseudocount=args.pseudocount,
                                        step_size=1.0, overwrite_counts=True))

    em_update()
    result["ll_after"] = hmm.log_likelihood(tokens).cpu()
    result["em"] = meter(em_update, base)
    return result


def run_pyjuice(tables: dict, tokens: torch.Tensor, kind: str, seq_len: int, args, meter: Meter) -> dict:
    import pyjuice
    from pyjuice.structures import HMM as JuiceHMM

    base = meter.allocated()
    num_states, vocab_size = tables["emissions"].shape[1], tables["emissions"].shape[0]
    start = time.perf_counter()
    root = JuiceHMM(seq_len, num_states, vocab_size, homogeneous=kind == "homogeneous",
                    alpha=tables["transitions"].clone(), beta=tables["emissions"].T.contiguous(),
                    gamma=tables["initial"].clone())
    pc = pyjuice.compile(root, verbose=False).to(meter.device)
    meter.sync()
    result = {"compile_seconds": time.perf_counter() - start,
              "model_gib": (meter.allocated() - base) / 2 ** 30}
    x = tokens.to(meter.device)

    def forward():
        with torch.no_grad():
            return pc(x)

    result["ll_before"] = forward()[:, 0].double().cpu()
    result["fwd"] = meter(forward, base)

    def forward_backward():
        forward()
        pc.backward(x, flows_memory=0.0)

    result["fb"] = meter(forward_backward, base)

    def em_update():
        forward_backward()
        pc.mini_batch_em(step_size=1.0, pseudocount=args.pseudocount)

    em_update()
    result["ll_after"] = forward()[:, 0].double().cpu()
    result["em"] = meter(em_update, base)
    return result


def _release(meter: Meter) -> None:
    gc.collect()
    if meter.cuda:
        torch.cuda.empty_cache()


def measure(kind: str, num_states: int, args) -> dict:
    """One configuration: hmmlvd, then (when available) pyjuice, in this process."""
    device = torch.device(args.device)
    meter = Meter(device, args.warmup, args.repeats)
    tables = random_tables(num_states, args.vocab_size, args.seed)
    tokens = torch.randint(0, args.vocab_size, (args.batch, args.seq_len),
                           generator=torch.Generator().manual_seed(args.seed + 1))
    row = {"kind": kind, "num_states": num_states}
    for name, runner in (("hmmlvd", run_hmmlvd), ("pyjuice", run_pyjuice)):
        reason = pyjuice_skip_reason(args.device) if name == "pyjuice" else None
        if reason:
            row[name] = {"skipped": reason}
            continue
        try:
            row[name] = runner(tables, tokens, kind, args.seq_len, args, meter)
        except Exception as error:      # e.g. out of memory at large h: report it, keep the other library
            first_line = (str(error).splitlines() or [""])[0][:200]
            row[name] = {"skipped": f"failed: {type(error).__name__}: {first_line}"}
        _release(meter)
    ours, theirs = row["hmmlvd"], row["pyjuice"]
    for stage in ("before", "after"):
        if f"ll_{stage}" in ours and f"ll_{stage}" in theirs:
            row[f"max_abs_ll_diff_{stage}"] = (ours[f"ll_{stage}"] - theirs[f"ll_{stage}"]).abs().max().item()
            row[f"mean_ll_{stage}"] = ours[f"ll_{stage}"].mean().item()
    for side in (ours, theirs):
        for stage in ("before", "after"):
            side.pop(f"ll_{stage}", None)
    return row


def pyjuice_skip_reason(device: str) -> str | None:
    """Why pyjuice cannot run here (None when it can)."""
    if torch.device(device).type != "cuda":
        return f"pyjuice needs CUDA (Triton kernels); device is {device}"
    try:
        import pyjuice  # noqa: F401
    except Exception as error:
        return f"import pyjuice failed: {type(error).__name__}: {error}"
    return None


def _pyjuice_version() -> str:
    try:
        return f"pyjuice {importlib.metadata.version('pyjuice')}"
    except importlib.metadata.PackageNotFoundError:
        return "pyjuice (version unknown: no package metadata)"


def _cell(row: dict, operation: str, key: str, scale: float, digits: int) -> str:
    values = [row[name].get(operation, {}).get(key) for name in ("hmmlvd", "pyjuice")]
    text = [f"{v * scale:.{digits}f}" if v is not None else "–" for v in values]
    ratio = f" ({values[1] / values[0]:.2f}×)" if None not in values and values[0] > 0 else ""
    return f"{text[0]} / {text[1]}{ratio}"


def markdown_row(row: dict) -> str:
    if "error" in row:
        return f"| {row['kind']} | {row['num_states']} | {row['error']} |" + " |" * 7
    times = [_cell(row, op, "seconds", 1e3, 1) for op in OPERATIONS]
    memory = [_cell(row, op, "peak_gib", 1, 2) for op in OPERATIONS]
    check = " / ".join(f"{row[k]:.1e}" if k in row else "–" for k in ("max_abs_ll_diff_before",
                                                                        "max_abs_ll_diff_after"))
    compile_seconds = row["pyjuice"].get("compile_seconds")
    return (f"| {row['kind']} | {row['num_states']} | " + " | ".join(times + memory) + f" | {check} | "
            + (f"{compile_seconds:.1f}" if compile_seconds is not None else "–") + " |")


HEADER = ("| kind | h | fwd ms | fb ms | EM ms | fwd peak GiB | fb peak GiB | EM peak GiB "
          "| max abs ΔLL before / after EM | pyjuice compile s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", type=int, nargs="+", default=[512, 1024, 2048, 4096], help="values of h")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--vocab-size", "--vocab", type=int, default=33_279)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pseudocount", type=float, default=0.1, help="EM pseudocount (same rule in both)")
    parser.add_argument("--tf32", action="store_true", help="hmmlvd's TF32 opt-in for its GEMMs (pyjuice's "
                                                          "Triton kernels choose their own precision)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed per configuration")
    parser.add_argument("--json", help="also write the rows to this JSON file (rewritten after each row)")
    parser.add_argument("--single", nargs=2, metavar=("KIND", "H"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(measure(args.single[0], int(args.single[1]), args)))
        return

    reason = pyjuice_skip_reason(args.device)
    version = None if reason else _pyjuice_version()
    print(f"device={args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}) "
          f"torch={torch.__version__} B={args.batch} T={args.seq_len} V={args.vocab_size} "
          f"pseudocount={args.pseudocount} hmmlvd tf32={args.tf32} warmup={args.warmup} repeats={args.repeats}")
    print(f"pyjuice: {'skipped: ' + reason if reason else version}")
    if not args.device.startswith("cuda"):
        print("memory columns skipped: torch.cuda memory counters need CUDA")
    print("cells: hmmlvd / pyjuice (pyjuice ÷ hmmlvd; > 1 means hmmlvd is faster or smaller)\n")
    print(HEADER, flush=True)
    rows = []
    passthrough = ["--batch", str(args.batch), "--vocab-size", str(args.vocab_size), "--seq-len", str(args.seq_len),
                   "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--pseudocount",
                   str(args.pseudocount), "--seed", str(args.seed), "--device", args.device] \
        + (["--tf32"] if args.tf32 else [])
    for num_states in args.states:         # smallest h first: an overrun loses the largest configurations
        for kind in args.kinds:
            command = [sys.executable, __file__, "--single", kind, str(num_states)] + passthrough
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                if done.returncode == 0:
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                else:
                    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    row = {"kind": kind, "num_states": num_states, "error": f"exit {done.returncode}: {last[:200]}"}
            except subprocess.TimeoutExpired:
                row = {"kind": kind, "num_states": num_states, "error": f"timed out after {args.timeout:.0f} s"}
            rows.append(row)
            print(markdown_row(row), flush=True)
            if args.json:
                with open(args.json, "w") as handle:
                    json.dump({"settings": vars(args), "pyjuice": reason or version, "rows": rows}, handle, indent=1)
    skipped = {}
    for row in rows:
        for name in ("hmmlvd", "pyjuice"):
            if "skipped" in row.get(name, {}):
                where = f"{row['kind']} h={row['num_states']}"
                skipped.setdefault(f"{name}: {row[name]['skipped']}", []).append(where)
    if skipped:
        print("\nskipped columns:\n" + "\n".join(f"- {reason} ({', '.join(where)})"
                                                  for reason, where in skipped.items()))


if __name__ == "__main__":
    main()
