"""The transformers LogitsProcessor: exact guide values (brute force) and satisfied constraints with a
tiny randomly initialised GPT-2 under greedy search, sampling and beam search."""
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList

from hmmlvd import HMM, HMMConfig
from hmmlvd.constraints import HMMConstraintLogitsProcessor, all_of, intersect, none_of
from tests.constraints.references import sequence_probabilities

VOCAB = 12


def tiny_gpt2(vocab_size: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab_size, n_embd=16, n_layer=1, n_head=2, n_positions=32,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("context_tokens", [0, 1])
def test_guide_is_the_exact_log_ratio(context_tokens):
    hmm = HMM.random(HMMConfig(num_states=3, vocab_size=4, seq_len=5), seed=0, dtype=torch.float64)
    dfa = all_of([[1], [2, 3]], 4)
    processor = HMMConstraintLogitsProcessor(hmm, dfa, prompt_length=2, max_new_tokens=4,
                                             context_tokens=context_tokens)
    prompt = (0, 3)
    context = prompt[len(prompt) - context_tokens:]
    sequences, probs = sequence_probabilities(hmm, context_tokens + 4)

    def satisfied_given(generated):
        """p(the DFA accepts all 4 generated tokens | context, the first ones are `generated`), by enumeration."""
        known = context + generated
        keep = [i for i, s in enumerate(sequences) if s[:len(known)] == known]
        hits = [i for i in keep if dfa.accepts(sequences[i][context_tokens:])]
        return float(probs[hits].sum() / probs[keep].sum())

    for generated in [(), (2,), (1, 2), (0, 1, 2)]:
        input_ids = torch.tensor([[*prompt, *generated]])
        scores = torch.randn(1, 4, dtype=torch.float64)
        guide = (processor(input_ids, scores) - torch.log_softmax(scores, dim=1))[0]
        before = satisfied_given(generated)
        for v in range(4):
            after = satisfied_given(generated + (v,))
            if after == 0:
                assert guide[v].item() == float("-inf")
            else:
                assert guide[v].item() == pytest.approx(math.log(after / before), rel=1e-9, abs=1e-9)


def _generate(model, processor, prompt, **options):
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, min_new_tokens=6,
                          logits_processor=LogitsProcessorList([processor]), **options)


@pytest.mark.parametrize("options", [
    {"do_sample": False},
    {"do_sample": True, "top_k": 0},
    {"do_sample": False, "num_beams": 4, "num_return_sequences": 4},
    {"do_sample": True, "top_k": 0, "context_tokens": 2},
], ids=["greedy", "sampling", "beam_search", "sampling_with_prompt_context"])
def test_generate_satisfies_the_constraint(options):
    model = tiny_gpt2(VOCAB)
    hmm = HMM.random(HMMConfig(num_states=6, vocab_size=VOCAB, seq_len=8), seed=1)
    dfa = intersect(all_of([[3], [5, 6]], VOCAB), none_of([[7]], VOCAB))
    prompt = torch.tensor([[1, 2, 4], [7, 8, 9]])
    options = dict(options)
    context_tokens = options.pop("context_tokens", 0)
    for seed in range(3 if options["do_sample"] else 1):
        torch.manual_seed(seed)
        processor = HMMConstraintLogitsProcessor(hmm, dfa, prompt_length=3, max_new_tokens=6,
                                                 context_tokens=context_tokens)
        out = _generate(model, processor, prompt, **options)
        continuations = out[:, 3:].tolist()
        assert len(continuations[0]) == 6
        assert all(dfa.accepts(row) for row in continuations), continuations


def test_unconstrained_model_would_violate_it():
    """Sanity check that the constraint is not trivially met by the base model."""
    model = tiny_gpt2(VOCAB)
    prompt = torch.tensor([[1, 2, 4], [7, 8, 9]])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, min_new_tokens=6,
                         do_sample=False)
    dfa = all_of([[3], [5, 6]], VOCAB)
    assert not all(dfa.accepts(row) for row in out[:, 3:].tolist())


def test_padded_model_vocabulary_never_picks_extra_ids():
    hmm = HMM.random(HMMConfig(num_states=4, vocab_size=10, seq_len=6), seed=2)
    processor = HMMConstraintLogitsProcessor(hmm, all_of([[3]], 10), prompt_length=1, max_new_tokens=4)
    out = processor(torch.tensor([[5]]), torch.zeros(1, 16))
    assert torch.isneginf(out[0, 10:]).all() and torch.isfinite(out[0, :10]).any()


def test_bad_inputs_raise_clear_errors():
    hmm = HMM.random(HMMConfig(num_states=4, vocab_size=10, seq_len=6), seed=3)
    unsatisfiable = all_of([[1], [2], [3]], 10)
    processor = HMMConstraintLogitsProcessor(hmm, unsatisfiable, prompt_length=1, max_new_tokens=2)
    with pytest.raises(ValueError, match="cannot be satisfied"):
        processor(torch.tensor([[5]]), torch.zeros(1, 10))
    with pytest.raises(ValueError, match="HMM window"):
        HMMConstraintLogitsProcessor(hmm, all_of([[1]], 10), prompt_length=1, max_new_tokens=7)
    with pytest.raises(ValueError, match="prompt_length"):
        HMMConstraintLogitsProcessor(hmm, all_of([[1]], 10), prompt_length=-1, max_new_tokens=3)
    with pytest.raises(ValueError, match="cannot exceed prompt_length"):
        HMMConstraintLogitsProcessor(hmm, all_of([[1]], 10), prompt_length=1, max_new_tokens=3, context_tokens=2)
    with pytest.raises(ValueError, match="HMM window"):
        HMMConstraintLogitsProcessor(hmm, all_of([[1]], 10), prompt_length=3, max_new_tokens=4, context_tokens=3)
    processor = HMMConstraintLogitsProcessor(hmm, all_of([[1]], 10), prompt_length=1, max_new_tokens=3)
    with pytest.raises(ValueError, match="trained on the base model's tokenizer"):
        processor(torch.tensor([[5]]), torch.zeros(1, 8))


def test_incremental_states_equal_filtering_from_scratch_when_rows_are_reordered():
    """The processor moves each row's cached state one token on; a fresh processor filters every row from
    the start. They agree at every step, also when the rows come back permuted (beam search) or unknown."""
    hmm = HMM.random(HMMConfig(num_states=5, vocab_size=6, seq_len=8), seed=2, dtype=torch.float64)
    dfa = all_of([[1], [2, 3]], 6)
    kept = HMMConstraintLogitsProcessor(hmm, dfa, prompt_length=2, max_new_tokens=5, context_tokens=1)
    generator = torch.Generator().manual_seed(0)
    ids = torch.tensor([[0, 4], [0, 5], [0, 1]])
    for step in range(5):
        scores = torch.randn(3, 6, generator=generator)
        fresh = HMMConstraintLogitsProcessor(hmm, dfa, prompt_length=2, max_new_tokens=5, context_tokens=1)
        torch.testing.assert_close(kept(ids, scores), fresh(ids, scores), rtol=0, atol=1e-12)
        order = torch.tensor([2, 0, 0]) if step == 2 else torch.arange(3)        # a beam-search reorder
        ids = torch.cat([ids[order], torch.randint(0, 6, (3, 1), generator=generator)], dim=1)
        if step == 3:
            ids[1, 3] = (ids[1, 3] + 1) % 6           # a row the processor has not seen: filtered from scratch


def test_a_bfloat16_hmm_guides_close_to_float32_and_still_satisfies_the_constraint():
    """A bfloat16 copy (transitions stored column-major) gives the float32 guide up to bfloat16 rounding, and
    its zeros are the same, so greedy search and sampling still satisfy the constraint."""
    hmm = HMM.random(HMMConfig(num_states=6, vocab_size=VOCAB, seq_len=8), seed=1)
    low = hmm.to(dtype=torch.bfloat16)
    assert low.transitions.mT.is_contiguous() and torch.equal(low.transitions.float(),
                                                              hmm.transitions.to(torch.bfloat16).float())
    dfa = intersect(all_of([[3], [5, 6]], VOCAB), none_of([[7]], VOCAB))
    generator = torch.Generator().manual_seed(0)
    guides = {}
    for name, model in (("float32", hmm), ("bfloat16", low)):
        processor = HMMConstraintLogitsProcessor(model, dfa, prompt_length=1, max_new_tokens=6)
        ids, rows = torch.tensor([[1], [2]]), []
        for _ in range(4):
            scores = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(len(rows)))
            rows.append(processor(ids, scores) - torch.log_softmax(scores, dim=1))
            ids = torch.cat([ids, torch.randint(0, 3, (2, 1), generator=generator)], dim=1)
        guides[name] = torch.stack(rows)
    assert torch.equal(torch.isneginf(guides["float32"]), torch.isneginf(guides["bfloat16"]))
    finite = torch.isfinite(guides["float32"])
    assert finite.any()
    torch.testing.assert_close(guides["bfloat16"][finite], guides["float32"][finite], rtol=0, atol=0.05)
    model = tiny_gpt2(VOCAB)
    for options in ({"do_sample": False}, {"do_sample": True, "top_k": 0}):
        torch.manual_seed(0)
        processor = HMMConstraintLogitsProcessor(low, dfa, prompt_length=3, max_new_tokens=6)
        out = _generate(model, processor, torch.tensor([[1, 2, 4], [7, 8, 9]]), **options)
        assert all(dfa.accepts(row) for row in out[:, 3:].tolist())
