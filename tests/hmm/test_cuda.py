"""The CUDA path is the CPU code on another device: same numbers."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig

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
