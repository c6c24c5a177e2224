"""LVD: the seeded subsample, and the central claim (an LVD init beats a random one at equal EM budget)."""
import pytest
import torch

from hmmlvd import HMM, HMMConfig, em
from hmmlvd.lvd import DistillConfig, distill, select_windows


def test_select_windows_is_seeded_and_nested():
    small, large = select_windows(100, 10, seed=3), select_windows(100, 30, seed=3)
    assert torch.equal(small, select_windows(100, 10, seed=3))
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.equal(select_windows(100, None, 0), torch.arange(100))


def test_config_rejects_fewer_windows_than_states():
    with pytest.raises(ValueError, match="below num_states"):
        DistillConfig(num_states=16, num_windows=8)


# A planted corpus: a known non-homogeneous HMM whose state s emits mostly the words of block s
# ("s2w0", "s2w1", ...). The teacher reads the block of a suffix's first word: a cheap, deterministic
# stand-in for the sentence encoder that reveals the hidden state (up to the emission noise).
NUM_STATES, WORDS_PER_STATE, SEQ_LEN, NOISE = 4, 3, 8, 0.15


class BlockWords:
    vocab_size = NUM_STATES * WORDS_PER_STATE

    def id_to_word(self, token):
        return f"s{token // WORDS_PER_STATE}w{token % WORDS_PER_STATE}"


class BlockTeacher:
    """Embeds a suffix as the one-hot block of its first word (both encoder interfaces: texts, or
    "token ids" that are the suffix texts themselves)."""

    name = fingerprint = "block-teacher"
    max_length, unk_token, eos_token, precision = 128, "<unk>", "<eos>", "float32"

    def embed(self, texts, progress=None):
        blocks = torch.tensor([int(text.split()[0][1:].split("w")[0]) for text in texts])
        if progress is not None:
            progress.update(len(texts))
        return torch.nn.functional.one_hot(blocks, NUM_STATES).float()

    def suffix_token_ids(self, texts_per_window):
        return [text for texts in texts_per_window for text in texts]

    def embed_token_ids(self, token_ids, progress=None):
        return self.embed(token_ids, progress)


def planted_hmm():
    generator = torch.Generator().manual_seed(11)
    config = HMMConfig(NUM_STATES, BlockWords.vocab_size, SEQ_LEN)
    transitions = torch.rand(SEQ_LEN - 1, NUM_STATES, NUM_STATES, generator=generator) + 2 * torch.eye(NUM_STATES)
    in_block = torch.rand(SEQ_LEN, NUM_STATES, WORDS_PER_STATE, generator=generator) + 0.2
    emissions = torch.full((SEQ_LEN, NUM_STATES, BlockWords.vocab_size), NOISE / BlockWords.vocab_size)
    for state in range(NUM_STATES):
        block = slice(state * WORDS_PER_STATE, (state + 1) * WORDS_PER_STATE)
        emissions[:, state, block] += (1 - NOISE) * in_block[:, state] / in_block[:, state].sum(-1, keepdim=True)
    return HMM(config, torch.full((NUM_STATES,), 1 / NUM_STATES), transitions / transitions.sum(-1, keepdim=True),
               emissions.transpose(1, 2).contiguous())


def test_lvd_init_beats_random_init_after_the_same_em_budget(tmp_path):
    truth = planted_hmm()
    train = truth.sample(600, generator=torch.Generator().manual_seed(0))
    held_out = truth.sample(400, generator=torch.Generator().manual_seed(1))
    config = DistillConfig(num_states=NUM_STATES, num_windows=300, kmeans_iterations=10, cache_dir=str(tmp_path))
    lvd, stats = distill(train, BlockWords(), config, "planted", encoder=BlockTeacher(), progress=False)
    assert stats.num_windows == 300 and stats.embedding.num_suffixes_computed == 300 * SEQ_LEN
    random = HMM.random(HMMConfig(NUM_STATES, BlockWords.vocab_size, SEQ_LEN), seed=0)
    scores = {}
    for name, hmm in (("lvd", lvd), ("random", random)):
        em.fit(hmm, train, em.Constant(1.0, epochs=3), full_batch=True, batch_size=600, pseudocount=0.1,
               progress=False)
        scores[name] = em.mean_log_likelihood(hmm, held_out, 400, hmm.device)
    ceiling = em.mean_log_likelihood(truth, held_out, 400, truth.device)
    assert scores["lvd"] > scores["random"] + 0.5, scores            # nats per window
    assert scores["lvd"] > ceiling - 0.6, (scores, ceiling)          # and near the planted model (-18.15)


def test_distilled_hmm_is_the_frequency_count_of_the_teachers_clusters(tmp_path):
    """With pseudocount 0 the LVD init is the relative frequency of (state, word) and (state, next
    state) pairs, where K-means on the teacher's 4 distinct embeddings recovers the block of x_t;
    counted here by plain loops, matched up to a relabelling of the states at each position."""
    train = planted_hmm().sample(200, generator=torch.Generator().manual_seed(2))
    config = DistillConfig(num_states=NUM_STATES, pseudocount=0.0, kmeans_iterations=10, cache_dir=str(tmp_path))
    hmm, _ = distill(train, BlockWords(), config, "planted-counts", encoder=BlockTeacher(), progress=False)
    blocks = (train // WORDS_PER_STATE).tolist()
    tokens = train.tolist()
    emission_counts = torch.zeros(SEQ_LEN, NUM_STATES, BlockWords.vocab_size, dtype=torch.float64)
    transition_counts = torch.zeros(SEQ_LEN - 1, NUM_STATES, NUM_STATES, dtype=torch.float64)
    initial_counts = torch.zeros(NUM_STATES, dtype=torch.float64)
    for row_blocks, row_tokens in zip(blocks, tokens):
        initial_counts[row_blocks[0]] += 1
        for t in range(SEQ_LEN):
            emission_counts[t, row_blocks[t], row_tokens[t]] += 1
            if t + 1 < SEQ_LEN:
                transition_counts[t, row_blocks[t], row_blocks[t + 1]] += 1
    # the block of each distilled state at each position: where its emission mass lies
    block_of = [[int(hmm.emissions[t, :, s].reshape(NUM_STATES, WORDS_PER_STATE).sum(1).argmax())
                 for s in range(NUM_STATES)] for t in range(SEQ_LEN)]
    assert all(sorted(labels) == list(range(NUM_STATES)) for labels in block_of)
    for t in range(SEQ_LEN):
        expected = emission_counts[t, block_of[t]] / emission_counts[t, block_of[t]].sum(-1, keepdim=True)
        torch.testing.assert_close(hmm.emissions[t].T.double(), expected, rtol=0, atol=1e-6)
    for t in range(SEQ_LEN - 1):
        pairs = transition_counts[t][block_of[t]][:, block_of[t + 1]]
        torch.testing.assert_close(hmm.transitions[t].double(), pairs / pairs.sum(-1, keepdim=True), rtol=0, atol=1e-6)
    torch.testing.assert_close(hmm.initial.double(), initial_counts[block_of[0]] / len(tokens), rtol=0, atol=1e-6)
