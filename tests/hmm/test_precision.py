"""The TF32 opt-in: a no-op off CUDA, and the global torch flag is always restored."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.hmm.inference import gemm_precision


def test_tf32_is_off_by_default_and_a_no_op_on_cpu():
    hmm = HMM.random(HMMConfig(num_states=8, vocab_size=20, seq_len=6), seed=0)
    tokens = torch.randint(0, 20, (5, 6), generator=torch.Generator().manual_seed(0))
    assert hmm.allow_tf32 is False
    exact = hmm.log_likelihood(tokens)
    hmm.allow_tf32 = True
    torch.testing.assert_close(hmm.log_likelihood(tokens), exact, rtol=0, atol=0)
    assert hmm.to(device="cpu").allow_tf32


@pytest.fixture
def tf32_flag():
    """Save and restore torch's global TF32 flag by hand: it is served by the cuBLAS module's
    ``__getattr__``, which ``monkeypatch.setattr`` cannot undo on newer pytest."""
    saved = torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


def test_gemm_precision_restores_the_flag_after_an_error(tf32_flag):
    class FakeCudaModel:
        allow_tf32 = True
        device = torch.device("cuda")

    torch.backends.cuda.matmul.allow_tf32 = False
    with pytest.raises(RuntimeError, match="boom"):
        with gemm_precision(FakeCudaModel()):
            assert torch.backends.cuda.matmul.allow_tf32 is True
            raise RuntimeError("boom")
    assert torch.backends.cuda.matmul.allow_tf32 is False
