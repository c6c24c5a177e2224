"""The CUDA path is the CPU code on another device: same numbers."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.hmm import filter_step, next_token_log_probs, sample_continuations

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_matches_cpu():
    hmm = HMM.random(HMMConfig(num_states=128, vocab_size=500, seq_len=32), seed=0)
    tokens = torch.randint(-1, 500, (64, 32), generator=torch.Generator().manual_seed(0))
    gpu = hmm.to(device="cuda")
    cpu_counts, gpu_counts = hmm.zero_counts(), gpu.zero_counts()
    torch.testing.assert_close(gpu.accumulate_counts(tokens, gpu_counts).cpu(), hmm.accumulate_counts(tokens, cpu_counts),
                               rtol=1e-5, atol=0)
    for name in cpu_counts:
        torch.testing.assert_close(gpu_counts[name].cpu(), cpu_counts[name], rtol=1e-4, atol=1e-5)
    samples = gpu.sample(8, generator=torch.Generator(device="cuda").manual_seed(0))
    assert samples.device.type == "cuda" and samples.shape == (8, 32)


def test_tf32_opt_in_stays_close_to_float32_and_restores_the_global_flag():
    hmm = HMM.random(HMMConfig(num_states=256, vocab_size=500, seq_len=32), seed=1, device="cuda")
    tokens = torch.randint(0, 500, (128, 32), generator=torch.Generator().manual_seed(1))
    exact = hmm.log_likelihood(tokens)
    flag = torch.backends.cuda.matmul.allow_tf32
    hmm.allow_tf32 = True
    fast = hmm.log_likelihood(tokens)
    assert torch.backends.cuda.matmul.allow_tf32 == flag
    relative = ((fast - exact).abs() / exact.abs()).max().item()
    assert relative < 1e-3, relative
    assert hmm.to(dtype=torch.float32).allow_tf32


def test_filtering_and_greedy_continuations_on_cuda_match_cpu():
    hmm = HMM.random(HMMConfig(num_states=64, vocab_size=300, seq_len=8), seed=2, dtype=torch.float64)
    gpu = hmm.to(device="cuda")
    tokens = torch.randint(0, 300, (16, 7), generator=torch.Generator().manual_seed(2))
    cpu_states, gpu_states = hmm.initial.double().expand(16, -1), gpu.initial.double().expand(16, -1)
    for t in range(7):
        torch.testing.assert_close(next_token_log_probs(gpu, gpu_states, t).cpu(), next_token_log_probs(hmm, cpu_states, t),
                                   rtol=1e-9, atol=1e-9)
        cpu_states = filter_step(hmm, cpu_states, tokens[:, t], t)
        gpu_states = filter_step(gpu, gpu_states, tokens[:, t].cuda(), t)
        torch.testing.assert_close(gpu_states.cpu(), cpu_states, rtol=1e-9, atol=1e-12)
    greedy = sample_continuations(gpu, tokens.cuda(), 12, temperature=0)        # runs past the 8-token window
    assert greedy.device.type == "cuda"
    assert torch.equal(greedy.cpu(), sample_continuations(hmm, tokens, 12, temperature=0))
