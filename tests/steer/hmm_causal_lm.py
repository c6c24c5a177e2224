"""An HMM wrapped as a transformers causal LM: its logits are the HMM's next-token log-probabilities.

Token 0 is the start token (BOS = EOS), which the HMM never emits; the model reads it first and then predicts
``x_1, x_2, ...`` at HMM positions 0, 1, ... Past the HMM window the logits are uniform (never used here).
"""
import torch
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from hmmlvd import HMM, HMMConfig
from hmmlvd.hmm import filter_step, next_token_log_probs


class HMMLMConfig(PretrainedConfig):
    model_type = "hmmlvd_test_hmm_lm"


class HMMCausalLM(PreTrainedModel, GenerationMixin):
    config_class = HMMLMConfig

    def __init__(self, config: HMMLMConfig, hmm: HMM):
        super().__init__(config)
        self.hmm = hmm
        self.anchor = torch.nn.Parameter(torch.zeros(1))       # generate() asks for a parameter's device

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        return {"input_ids": input_ids}          # no KV cache: every step reads the whole sequence

    def forward(self, input_ids, attention_mask=None, **kwargs):
        hmm, (batch, length) = self.hmm, input_ids.shape
        logits = torch.zeros(batch, length, hmm.vocab_size, dtype=torch.float64)
        state = hmm.initial.double().expand(batch, -1)
        for j in range(min(length, hmm.seq_len)):
            logits[:, j] = next_token_log_probs(hmm, state, j)
            if j + 1 < min(length, hmm.seq_len):
                state = filter_step(hmm, state, input_ids[:, j + 1], j)
        return CausalLMOutput(logits=logits.float())


def hmm_without_token_zero(num_states: int, vocab_size: int, seq_len: int, seed: int = 0) -> HMM:
    """A random float64 HMM whose emissions give token 0 (the start token) probability 0."""
    hmm = HMM.random(HMMConfig(num_states, vocab_size, seq_len), seed=seed, dtype=torch.float64)
    emissions = hmm.emissions.clone()
    emissions[:, 0, :] = 0
    emissions /= emissions.sum(dim=1, keepdim=True)
    return HMM(hmm.config, hmm.initial, hmm.transitions, emissions)


def wrap(hmm: HMM) -> HMMCausalLM:
    config = HMMLMConfig(vocab_size=hmm.vocab_size, bos_token_id=0, eos_token_id=None, pad_token_id=0,
                         use_cache=False, num_hidden_layers=1)
    return HMMCausalLM(config, hmm).eval()
