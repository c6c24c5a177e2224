"""Exactness of steering: when the guiding HMM *is* the base model (an HMM wrapped as a transformers causal LM),
steered generation samples the true p(x | constraint), checked against the enumeration of every output."""
import itertools
import pytest
import torch
from scipy.stats import chisquare
from transformers import LogitsProcessorList

from hmmlvd import LanguageModel
from hmmlvd.constraints import HMMConstraintLogitsProcessor
from hmmlvd.data.tokenizers import HFTokenizer
from hmmlvd.steer import generate_steered
from tests.steer.hmm_causal_lm import hmm_without_token_zero, wrap

WORDS = ["<s>", "a", "b", "c"]
LENGTH = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<s>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="<s>",
                                        unk_token="<s>", pad_token="<s>")
    folder = tmp_path_factory.mktemp("tok")
    tokenizer.save_pretrained(folder)
    hmm = hmm_without_token_zero(num_states=3, vocab_size=len(WORDS), seq_len=LENGTH, seed=3)
    lm = LanguageModel(hmm, HFTokenizer(folder))
    constraint = lm.concepts([["b"], ["c"]])                  # both b and c appear
    return wrap(hmm), tokenizer, lm, constraint


def true_conditional(lm, constraint):
    """p(x | constraint) over every x in {a, b, c}^LENGTH, by enumeration."""
    sequences = [list(s) for s in itertools.product([1, 2, 3], repeat=LENGTH)]
    kept = [s for s in sequences if constraint.accepts(s)]
    log_p = lm.hmm.log_likelihood(torch.tensor(kept))
    probs = torch.softmax(log_p, dim=0)
    return {tuple(s): float(p) for s, p in zip(kept, probs)}


def test_steered_sampling_with_the_model_itself_follows_the_true_conditional(setup):
    model, tokenizer, lm, constraint = setup
    exact = true_conditional(lm, constraint)
    num = 6000
    samples = generate_steered(model, tokenizer, lm, "", constraint, LENGTH, num_samples=num, seed=0)
    counts = {s: 0 for s in exact}
    for row in samples:
        assert tuple(row) in counts, f"{row} violates the constraint"
        counts[tuple(row)] += 1
    keys = sorted(exact)
    observed = [counts[k] for k in keys]
    expected = [exact[k] * num for k in keys]
    # Pearson chi-square over every satisfying sequence; the seed is fixed, so this is deterministic.
    # Tolerance: reject below p = 1e-3.
    assert chisquare(observed, expected).pvalue > 1e-3


def test_every_step_of_generate_is_the_exact_conditional_next_token_distribution(setup):
    model, tokenizer, lm, constraint = setup
    exact = true_conditional(lm, constraint)
    processor = HMMConstraintLogitsProcessor(lm.hmm, constraint, prompt_length=1, max_new_tokens=LENGTH)
    torch.manual_seed(1)
    start = torch.zeros(64, 1, dtype=torch.long)
    out = model.generate(start, attention_mask=torch.ones_like(start), max_new_tokens=LENGTH, do_sample=True, top_k=0,
                         logits_processor=LogitsProcessorList([processor]), output_scores=True,
                         return_dict_in_generate=True, pad_token_id=0)
    for row, sequence in enumerate(out.sequences[:, 1:].tolist()):
        for t in range(LENGTH):
            mass = torch.zeros(len(WORDS), dtype=torch.float64)
            for x, p in exact.items():
                if list(x[:t]) == sequence[:t]:
                    mass[x[t]] += p
            torch.testing.assert_close(torch.softmax(out.scores[t][row].double(), 0), mass / mass.sum(),
                                       rtol=0, atol=1e-5)     # the model's logits pass through float32
