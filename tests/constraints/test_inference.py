"""Exact HMM x DFA inference against brute-force enumeration and a naive dense forward pass."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.constraints import (ConstraintTables, all_of, complement, constraint_log_prob, intersect,
                                length_between, none_of, sample_constrained)
from hmmlvd.hmm import filter_step, next_token_log_probs
from tests.constraints.references import (brute_constrained_distribution, brute_constraint_prob,
                                          empirical_frequencies, naive_constraint_prob, sequence_probabilities)

TINY = {"nonhomogeneous": HMMConfig(num_states=3, vocab_size=4, seq_len=5),
        "homogeneous": HMMConfig(num_states=2, vocab_size=4, seq_len=5, homogeneous=True)}
DFAS = {
    "keywords": lambda: all_of([[1], [2, 3]], 4),
    "banned": lambda: none_of([[0], [3, 3]], 4),
    "length": lambda: length_between(1, 2, 4, end_token=3),
    "combined": lambda: intersect(all_of([[2]], 4), complement(all_of([[1, 1]], 4))),
}


@pytest.mark.parametrize("config", TINY.values(), ids=TINY.keys())
@pytest.mark.parametrize("dfa_name", DFAS)
def test_constraint_probability_matches_brute_force(config, dfa_name):
    hmm = HMM.random(config, seed=1, dtype=torch.float64)
    dfa = DFAS[dfa_name]()
    table = sequence_probabilities(hmm, config.seq_len)
    for prefix in [(), (2,), (0, 3)]:
        for num_new in range(1, config.seq_len - len(prefix) + 1):
            got = constraint_log_prob(hmm, dfa, torch.tensor([prefix], dtype=torch.long), num_new).exp().item()
            expected = brute_constraint_prob(table, dfa, prefix, num_new)
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (prefix, num_new)


def test_batched_prefixes_match_one_at_a_time():
    hmm = HMM.random(TINY["nonhomogeneous"], seed=2, dtype=torch.float64)
    dfa = DFAS["keywords"]()
    prefixes = torch.tensor([[0, 1], [3, 3], [2, 0]])
    batched = constraint_log_prob(hmm, dfa, prefixes, 3)
    single = torch.cat([constraint_log_prob(hmm, dfa, p.unsqueeze(0), 3) for p in prefixes])
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=0)


def test_next_token_joint_mid_continuation_matches_brute_force():
    """p(x_t = v, constraint | prefix, first generated token) from the tables, against enumeration."""
    hmm = HMM.random(TINY["nonhomogeneous"], seed=3, dtype=torch.float64)
    dfa = DFAS["keywords"]()
    prefix, generated = (0,), (2,)
    tables = ConstraintTables(hmm, dfa, 1, 5)
    state_probs = hmm.state_distribution(torch.tensor([prefix])).double()
    state_probs = filter_step(hmm, state_probs, torch.tensor(generated), 1)
    joint = tables.next_token_log_joint(2, state_probs, [dfa.run(generated)]).exp()[0]
    sequences, probs = sequence_probabilities(hmm, 5)
    context = [i for i, s in enumerate(sequences) if s[:2] == prefix + generated]
    normaliser = probs[context].sum()
    for v in range(4):
        hits = [i for i in context if sequences[i][2] == v and dfa.accepts(sequences[i][1:])]
        assert joint[v].item() == pytest.approx(float(probs[hits].sum() / normaliser), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_joint_with_next_token_is_one_pass_of_both(dtype):
    """The stacked product gives the same joint and the same next-token distribution as the separate calls."""
    hmm = HMM.random(HMMConfig(num_states=5, vocab_size=7, seq_len=6), seed=4, dtype=dtype)
    dfa = all_of([[1], [2, 3]], 7)
    tables = ConstraintTables(hmm, dfa, 1, 6)
    state_probs = filter_step(hmm, hmm.state_distribution(torch.tensor([[0], [4], [2]])).double(),
                              torch.tensor([2, 1, 6]), 1)
    states = [dfa.run([2]), dfa.run([1]), dfa.run([6])]
    joint, next_token = tables.next_token_log_joint(2, state_probs, states, with_next_token=True)
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(joint, tables.next_token_log_joint(2, state_probs, states), **tolerance)
    torch.testing.assert_close(next_token, next_token_log_probs(hmm, state_probs, 2), **tolerance)
    assert joint.shape == next_token.shape == (3, 7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_medium_model_matches_naive_dense_forward(dtype):
    """Larger vocabulary (default edges carry most tokens) against a forward pass with a dense DFA table."""
    hmm = HMM.random(HMMConfig(num_states=8, vocab_size=300, seq_len=10), seed=4, dtype=dtype)
    dfa = intersect(all_of([[5], [17, 18], [299]], 300), none_of([[0]], 300))
    prefix = [3, 9, 4]
    got = constraint_log_prob(hmm, dfa, torch.tensor([prefix]), 7).exp().item()
    expected = naive_constraint_prob(hmm, dfa, prefix, 7)
    assert got == pytest.approx(expected, rel=1e-9 if dtype == torch.float64 else 1e-4)


@pytest.mark.parametrize("dfa_name", ["keywords", "length"])
def test_constrained_samples_follow_the_exact_conditional(dfa_name):
    hmm = HMM.random(HMMConfig(num_states=3, vocab_size=4, seq_len=5), seed=5, dtype=torch.float64)
    dfa = DFAS[dfa_name]()
    prefix, num_new, draws = (1,), 3, 20_000
    continuations, exact = brute_constrained_distribution(hmm, dfa, prefix, num_new)
    samples = sample_constrained(hmm, dfa, torch.tensor([prefix]).expand(draws, -1), num_new,
                                 generator=torch.Generator().manual_seed(0))
    assert all(dfa.accepts(row) for row in samples.tolist())
    # 20k draws: standard error per cell <= 0.0036, so 0.015 is > 4 sigma
    torch.testing.assert_close(empirical_frequencies(samples, continuations), exact, atol=0.015, rtol=0)


@pytest.mark.parametrize("options", [{}, {"temperature": 0}, {"temperature": 0.5, "top_k": 3}, {"top_k": 1}])
def test_every_sample_satisfies_the_constraint(options):
    hmm = HMM.random(HMMConfig(num_states=16, vocab_size=60, seq_len=12), seed=6)
    dfa = intersect(all_of([[7], [8, 9], [59]], 60), none_of([[1]], 60))
    prefix = torch.randint(2, 60, (40, 4), generator=torch.Generator().manual_seed(1))
    samples = sample_constrained(hmm, dfa, prefix, 8, generator=torch.Generator().manual_seed(2), **options)
    assert samples.shape == (40, 8)
    assert all(dfa.accepts(row) for row in samples.tolist())


def test_unsatisfiable_constraints_raise_clear_errors():
    hmm = HMM.random(TINY["nonhomogeneous"], seed=7, dtype=torch.float64)
    empty = torch.zeros(1, 0, dtype=torch.long)
    contradiction = intersect(all_of([[1]], 4), none_of([[1]], 4))
    with pytest.raises(ValueError, match="accepts no string"):
        sample_constrained(hmm, contradiction, empty, 3)
    with pytest.raises(ValueError, match="no string of exactly 2 tokens"):
        sample_constrained(hmm, all_of([[0], [1], [2]], 4), empty, 2)
    emissions = hmm.emissions.clone()
    emissions[:, 1] = 0
    emissions[:, 0] += hmm.emissions[:, 1]
    impossible = HMM(hmm.config, hmm.initial, hmm.transitions, emissions)
    with pytest.raises(ValueError, match="HMM gives every satisfying continuation probability 0"):
        sample_constrained(impossible, all_of([[1]], 4), empty, 3)
    assert constraint_log_prob(impossible, all_of([[1]], 4), empty, 3).item() == float("-inf")


def test_bad_windows_and_vocabularies_raise_clear_errors():
    hmm = HMM.random(TINY["nonhomogeneous"], seed=8)
    dfa = all_of([[1]], 4)
    with pytest.raises(ValueError, match="exceeds the HMM window"):
        constraint_log_prob(hmm, dfa, torch.zeros(1, 3, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="ask for at most 5 new tokens"):
        sample_constrained(hmm, dfa, torch.zeros(1, 0, dtype=torch.long), 6)
    with pytest.raises(ValueError, match="positive integer"):
        sample_constrained(hmm, dfa, torch.zeros(1, 0, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="vocab_size=4"):
        constraint_log_prob(hmm, all_of([[1]], 5), torch.zeros(1, 0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="hmmlvd.constraints.DFA"):
        constraint_log_prob(hmm, "bank", torch.zeros(1, 0, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="missing tokens"):
        constraint_log_prob(hmm, dfa, torch.tensor([[0, -1]]), 2)
    with pytest.raises(ValueError, match="temperature"):
        sample_constrained(hmm, dfa, torch.zeros(1, 0, dtype=torch.long), 2, temperature=-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    hmm = HMM.random(HMMConfig(num_states=8, vocab_size=300, seq_len=10), seed=4)
    dfa = intersect(all_of([[5], [17, 18], [299]], 300), none_of([[0]], 300))
    prefix = torch.tensor([[3, 9, 4]])
    on_cpu = constraint_log_prob(hmm, dfa, prefix, 7)
    on_gpu = constraint_log_prob(hmm.to("cuda"), dfa, prefix.cuda(), 7)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-4, atol=0)
    samples = sample_constrained(hmm.to("cuda"), dfa, prefix.expand(64, -1).cuda(), 7,
                                 generator=torch.Generator("cuda").manual_seed(0))
    assert samples.is_cuda and all(dfa.accepts(row) for row in samples.tolist())


def test_sparse_fitted_hmm_matches_brute_force():
    """A closed-form fit without smoothing has exact zeros; probabilities and samples must respect them."""
    generator = torch.Generator().manual_seed(9)
    states = torch.randint(0, 3, (12, 5), generator=generator)
    tokens = (states + torch.randint(0, 2, (12, 5), generator=generator)) % 4      # each state emits 2 tokens
    hmm = HMM.from_complete_data(tokens, states, num_states=3, vocab_size=4, pseudocount=0.0, dtype=torch.float64)
    assert bool((hmm.emissions == 0).any())
    table = sequence_probabilities(hmm, 5)
    for dfa in (DFAS["keywords"](), DFAS["banned"](), DFAS["combined"]()):
        for prefix in [(), tuple(tokens[0, :2].tolist())]:
            got = constraint_log_prob(hmm, dfa, torch.tensor([prefix], dtype=torch.long), 5 - len(prefix)).exp()
            assert got.item() == pytest.approx(brute_constraint_prob(table, dfa, prefix, 5 - len(prefix)),
                                               rel=1e-9, abs=1e-12)
            if got.item() > 0:
                samples = sample_constrained(hmm, dfa, torch.tensor([prefix] * 200, dtype=torch.long).view(200, -1),
                                             5 - len(prefix), generator=generator)
                full = torch.cat([torch.tensor([prefix] * 200, dtype=torch.long).view(200, -1), samples], dim=1)
                assert all(dfa.accepts(row) for row in samples.tolist())
                assert bool(torch.isfinite(hmm.log_likelihood(full)).all())           # only possible sequences
