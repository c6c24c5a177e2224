"""LanguageModel: scores and next-token distributions against brute force, the sliding protocol,
generation (seeded, greedy, constrained) and storage (the command lines are in tests/cli)."""
import math

import pytest
import torch

from hmmlvd import HMM, HMMConfig
from hmmlvd.constraints import all_of
from hmmlvd.data.tokenizers import SentencePieceTokenizer
from hmmlvd.data import vocab as vocab_module
from hmmlvd.lm import LanguageModel
from tests.constraints.references import empirical_frequencies, sequence_probabilities


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny tensors: avoid two-thread barrier stalls on the busy shared CPU; restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Words:
    """A minimal whitespace tokenizer over a fixed word list (id 0 = <unk>)."""

    def __init__(self, words):
        self.words = ["<unk>", *words]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.vocab_size, self.unk_id = len(self.words), 0

    def encode(self, text):
        return [self.index.get(w, 0) for w in text.split()]

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


TINY_WORDS = Words(["a", "b", "c"])      # V = 4


def tiny_lm(homogeneous=False, seq_len=4, seed=0):
    hmm = HMM.random(HMMConfig(num_states=3, vocab_size=4, seq_len=seq_len, homogeneous=homogeneous),
                     seed=seed, dtype=torch.float64)
    return LanguageModel(hmm, TINY_WORDS)


def brute_conditional(lm, context, token):
    """log p(token | context) from brute-force sequence probabilities (context fits the window)."""
    sequences, probs = sequence_probabilities(lm.hmm, len(context) + 1)
    joint = sum(float(p) for s, p in zip(sequences, probs) if s == (*context, token))
    marginal = sum(float(p) for s, p in zip(sequences, probs) if s[:len(context)] == tuple(context))
    return math.log(joint / marginal)


def test_score_matches_brute_force_inside_the_window():
    lm = tiny_lm()
    (score,) = lm.score("a c zzz b")
    assert score.token_ids == [1, 3, 0, 2]                       # unknown word -> <unk>
    for t, token in enumerate(score.token_ids):
        assert score.token_log_probs[t] == pytest.approx(brute_conditional(lm, score.token_ids[:t], token), rel=1e-10)
    sequences, probs = sequence_probabilities(lm.hmm, 4)
    assert score.total_log_prob == pytest.approx(math.log(float(probs[sequences.index((1, 3, 0, 2))])), rel=1e-10)


def test_long_texts_use_the_sliding_protocol():
    lm = tiny_lm(seq_len=4)
    text = "a b c c b a a b"
    (score,) = lm.score(text)
    ids = score.token_ids
    for t in range(len(ids)):
        context = ids[max(0, t - 3):t]                            # at most seq_len - 1 previous tokens
        assert score.token_log_probs[t] == pytest.approx(brute_conditional(lm, context, ids[t]), rel=1e-10), t
    assert lm.perplexity(text) == pytest.approx(math.exp(-score.total_log_prob / len(ids)), rel=1e-12)


def test_homogeneous_models_score_whole_texts():
    lm = tiny_lm(homogeneous=True, seq_len=2)
    (score,) = lm.score("a b c a b")
    expected = lm.hmm.log_likelihood(torch.tensor([score.token_ids])).item()
    assert score.total_log_prob == pytest.approx(expected, rel=1e-12)


def test_batched_scores_equal_single_scores():
    lm = tiny_lm()
    texts = ["a b", "", "c c c c c c", "b"]
    batched = lm.score(texts, batch_size=2)
    for text, score in zip(texts, batched):
        assert score.token_log_probs == pytest.approx(lm.score(text)[0].token_log_probs, rel=1e-12)
    assert batched[1].num_tokens == 0 and batched[1].total_log_prob == 0.0
    with pytest.raises(ValueError, match="at least one token"):
        lm.perplexity([""])


def test_next_token_logprobs():
    lm = tiny_lm()
    single = lm.next_token_logprobs("a b")
    assert single.shape == (4,) and single.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    for v in range(4):
        assert single[v].item() == pytest.approx(brute_conditional(lm, [1, 2], v), rel=1e-10)
    batch = lm.next_token_logprobs(["a b", "", "c c c c c"])
    torch.testing.assert_close(batch[0], single)
    torch.testing.assert_close(batch[1].exp(), lm.hmm.initial @ lm.hmm.emission_matrix(0).T)   # empty prefix
    torch.testing.assert_close(batch[2], lm.next_token_logprobs("c c c"))     # last seq_len - 1 tokens


def test_generation_is_seeded_and_greedy_follows_next_token_logprobs():
    lm = tiny_lm(seq_len=4)
    first = lm.generate(["a", "b c"], max_new_tokens=9, seed=3, num_samples=2)
    assert first == lm.generate(["a", "b c"], max_new_tokens=9, seed=3, num_samples=2)
    assert len(first) == 4 and all(len(text.split()) == 9 for text in first)
    (greedy,) = lm.generate_ids("a", max_new_tokens=7, temperature=0)      # runs past the 4-token window
    context = [1]
    for token in greedy:
        assert token == int(lm._next_token_log_probs([context]).argmax())
        context.append(token)


def test_unconstrained_samples_follow_the_model():
    lm = tiny_lm(seq_len=4, seed=5)
    draws = 20_000
    samples = lm.generate_ids("b", max_new_tokens=2, seed=0, num_samples=draws)
    sequences, probs = sequence_probabilities(lm.hmm, 3)
    keep = [i for i, s in enumerate(sequences) if s[0] == 2]
    exact = probs[keep] / probs[keep].sum()
    frequencies = empirical_frequencies(samples, [sequences[i][1:] for i in keep])
    # 20k draws: standard error per cell <= 0.0036, so 0.015 is > 4 sigma
    torch.testing.assert_close(frequencies, exact, atol=0.015, rtol=0)


def test_constrained_generation_satisfies_the_constraint():
    lm = tiny_lm(seq_len=4)
    constraint = lm.keywords(["a", "c"])
    texts = lm.generate(["b", ""], max_new_tokens=3, seed=1, constraint=constraint, num_samples=50)
    assert all({"a", "c"} <= set(text.split()) for text in texts)
    (greedy,) = lm.generate("b", max_new_tokens=3, temperature=0, constraint=constraint)
    assert {"a", "c"} <= set(greedy.split())
    banned = lm.generate("", max_new_tokens=4, seed=2, constraint=lm.banned(["a b", "c"]), num_samples=30)
    assert all("c" not in t.split() and "a b" not in t for t in banned)
    log_prob = lm.constraint_log_prob(["b"], constraint, 3)
    assert log_prob.exp().item() == pytest.approx(
        math.exp(lm.constraint_log_prob("b", all_of([[1], [3]], 4), 3).item()), rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    lm = tiny_lm(seq_len=4)
    on_gpu = lm.to("cuda")
    texts = ["a b c a b c", "c"]
    for gpu_score, cpu_score in zip(on_gpu.score(texts), lm.score(texts)):
        assert gpu_score.token_log_probs == pytest.approx(cpu_score.token_log_probs, rel=1e-9)
    torch.testing.assert_close(on_gpu.next_token_logprobs("a b").cpu(), lm.next_token_logprobs("a b"))
    texts = on_gpu.generate("b", max_new_tokens=3, seed=0, constraint=lm.keywords(["a", "c"]), num_samples=10)
    assert all({"a", "c"} <= set(text.split()) for text in texts)
    assert len(on_gpu.generate("a", max_new_tokens=6, seed=0)[0].split()) == 6


def test_bad_inputs_raise_clear_errors():
    lm = tiny_lm(seq_len=4)
    with pytest.raises(ValueError, match="at least one word"):
        lm.keywords([])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        lm.keywords(["a", "zebra"])
    with pytest.raises(ValueError, match="exceeds the HMM window"):
        lm.generate("a b c", max_new_tokens=2, constraint=lm.keywords(["a"]))
    with pytest.raises(ValueError, match="no string of exactly 1 tokens"):
        lm.generate("a", max_new_tokens=1, constraint=lm.keywords(["a", "b"]))
    with pytest.raises(ValueError, match="max_new_tokens"):
        lm.generate("a", max_new_tokens=0)
    with pytest.raises(ValueError, match="top_k"):
        lm.generate("a", top_k=0)
    with pytest.raises(ValueError, match="list of strings"):
        lm.score([1, 2])
    with pytest.raises(ValueError, match="batch_size"):
        lm.score("a b", batch_size=0)
    with pytest.raises(ValueError, match="vocab_size"):
        LanguageModel(HMM.random(HMMConfig(3, 5, 4)), TINY_WORDS)


CORPUS = ["the river bank was muddy", "the fish swam in the river", "a bank holds money",
          "the cat sat on the mat"] * 20


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    tokenizer = SentencePieceTokenizer.train(CORPUS, vocab_size=40, model_type="bpe")
    hmm = HMM.random(HMMConfig(num_states=4, vocab_size=tokenizer.vocab_size, seq_len=12), seed=0)
    directory = tmp_path_factory.mktemp("lm")
    LanguageModel(hmm, tokenizer).save_pretrained(directory)
    return directory, LanguageModel(hmm, tokenizer)


def test_save_and_load_round_trip(saved_model):
    directory, original = saved_model
    loaded = LanguageModel.from_pretrained(directory)
    assert loaded.encode("the river bank") == original.encode("the river bank")
    reloaded, before = loaded.score(CORPUS[:3]), original.score(CORPUS[:3])
    assert [s.token_log_probs for s in reloaded] == [s.token_log_probs for s in before]


def test_word_vocabulary_model_round_trip(tmp_path):
    vocab = vocab_module.Vocab.from_corpus(CORPUS)
    lm = LanguageModel(HMM.random(HMMConfig(num_states=4, vocab_size=vocab.vocab_size, seq_len=8), seed=1), vocab)
    lm.save_pretrained(tmp_path)
    loaded = LanguageModel.from_pretrained(tmp_path)
    assert isinstance(loaded.tokenizer, vocab_module.Vocab)
    (score,) = loaded.score("the zebra bank")
    assert score.token_ids == [vocab.index["the"], vocab.unk_id, vocab.index["bank"]]
    assert score.token_log_probs == lm.score("the zebra bank")[0].token_log_probs
    texts = loaded.generate("the", max_new_tokens=5, seed=0, constraint=loaded.keywords(["river", "money"]),
                            num_samples=20)
    assert all({"river", "money"} <= set(text.split()) for text in texts)
