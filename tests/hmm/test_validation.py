"""Bad inputs raise ValueError naming the problem."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig


@pytest.fixture
def hmm():
    return HMM.random(HMMConfig(num_states=3, vocab_size=5, seq_len=4))


@pytest.mark.parametrize("tokens, message", [
    (torch.tensor([[0, 5, 1, 1]]), r"\[0, 5\)"),
    (torch.tensor([[0, -2, 1, 1]]), r"\[0, 5\)"),
    (torch.tensor([0, 1, 2]), "shape"),
    (torch.tensor([[0.0, 1.0]]), "integer"),
    (torch.zeros(2, 5, dtype=torch.long), "seq_len"),
    (torch.zeros(2, 0, dtype=torch.long), "at least one"),
    ([[0, 1]], "LongTensor"),
])
def test_bad_tokens(hmm, tokens, message):
    with pytest.raises(ValueError, match=message):
        hmm.log_likelihood(tokens)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_states": 0, "vocab_size": 5}, "num_states"),
    ({"num_states": 2, "vocab_size": -1}, "vocab_size"),
    ({"num_states": 2, "vocab_size": 5, "seq_len": 0}, "seq_len"),
    ({"num_states": 2.5, "vocab_size": 5}, "num_states"),
    ({"num_states": 2, "vocab_size": 5, "homogeneous": "yes"}, "homogeneous"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HMMConfig(**kwargs)


def test_bad_parameters(hmm):
    with pytest.raises(ValueError, match="transitions must have shape"):
        HMM(hmm.config, hmm.initial, hmm.transitions[:1], hmm.emissions)
    with pytest.raises(ValueError, match="floating-point"):
        HMM(hmm.config, hmm.initial.long(), hmm.transitions, hmm.emissions)


def test_prefix_filling_the_window_has_nothing_to_predict(hmm):
    with pytest.raises(ValueError, match="no position to predict"):
        hmm.next_token_log_probs(torch.zeros(1, 4, dtype=torch.long))
