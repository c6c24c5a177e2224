"""Distilling an HMM from a causal LM: the sample cache (resume, checksums), the hidden-state teacher and
``distill_lm`` end to end on a tiny random GPT-2."""
import json

import pytest
import torch

import hmmlvd
from hmmlvd.data.lm_samples import SampleCache, SampleSettings, draw_shard, prompt_ids, sample_key
from hmmlvd.lvd import causal_lm
from hmmlvd.lvd.causal_lm import HiddenStateTeacher, lm_samples, load_causal_lm
from hmmlvd.lvd.lm_recipe import DistillLMConfig, distill_lm
from hmmlvd.lvd.recipe import RecipeConfig
from tests.tiny_lm import save_tiny_gpt2

SETTINGS = SampleSettings(num_tokens=6, shard_size=8, batch_size=8)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    folder = save_tiny_gpt2(tmp_path_factory.mktemp("gpt2") / "lm", extra_vocab=3)
    return folder, *load_causal_lm(folder, "cpu")


def test_samples_log_probs_are_the_lms_and_padded_ids_are_never_drawn(tiny_lm):
    _, model, tokenizer = tiny_lm
    tokens, log_probs = draw_shard(model, prompt_ids(tokenizer, None), SETTINGS, 0, len(tokenizer))
    assert tokens.shape == (8, 6) and int(tokens.max()) < len(tokenizer)       # the 3 extra model ids never appear
    ids = torch.cat([torch.zeros(8, 1, dtype=torch.long), tokens], dim=1)     # after the start token (EOS, id 0)
    with torch.no_grad():
        logits = model(ids).logits[:, :-1, :len(tokenizer)].double()
    reference = torch.log_softmax(logits, -1).gather(2, ids[:, 1:, None]).squeeze(2).sum(1)
    torch.testing.assert_close(log_probs, reference, rtol=0, atol=1e-9)


def test_a_killed_run_resumes_to_the_same_samples_and_a_corrupt_shard_is_refused(tiny_lm, tmp_path, monkeypatch):
    _, model, tokenizer = tiny_lm
    whole, whole_lp = lm_samples(model, tokenizer, 30, SETTINGS, cache_dir=tmp_path / "a", progress=False)
    calls, real_draw = [], causal_lm.draw_shard

    def dying_draw(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 3:
            raise RuntimeError("killed")     # the process dies while drawing the third shard
        return real_draw(*args, **kwargs)

    monkeypatch.setattr(causal_lm, "draw_shard", dying_draw)
    with pytest.raises(RuntimeError, match="killed"):
        lm_samples(model, tokenizer, 30, SETTINGS, cache_dir=tmp_path / "b", progress=False)
    calls.clear()
    resumed, resumed_lp = lm_samples(model, tokenizer, 30, SETTINGS, cache_dir=tmp_path / "b", progress=False)
    assert calls == [2, 3]                             # shards 0 and 1 were read back, not drawn again
    assert torch.equal(resumed, whole) and torch.equal(resumed_lp, whole_lp)
    # a flipped byte inside a shard's token data is refused, naming the shard
    cache = SampleCache(tmp_path / "b", sample_key(model, tokenizer, SETTINGS, prompt_ids(tokenizer, None), "train"))
    raw = bytearray(cache.path(1).read_bytes())
    raw[-20] ^= 0xFF
    cache.path(1).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="shard-000001.*(SHA-256|damaged)"):
        lm_samples(model, tokenizer, 30, SETTINGS, cache_dir=tmp_path / "b", progress=False)
    # splits draw from their own seeds
    monkeypatch.undo()
    valid, _ = lm_samples(model, tokenizer, 30, SETTINGS, split="valid", cache_dir=tmp_path / "a", progress=False)
    assert not torch.equal(valid, whole)


def test_hidden_state_teacher_reads_the_lm_after_its_start_token(tiny_lm):
    _, model, tokenizer = tiny_lm
    windows = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    features = HiddenStateTeacher(model, tokenizer, layer=-1, start_token=0).embed_block(windows)
    with torch.no_grad():
        reference = model(torch.tensor([[0, 1, 2, 3, 4]]), output_hidden_states=True).hidden_states[-1][0, 1:]
    assert features.shape == (2, 4, 16)
    torch.testing.assert_close(features[0], reference)
    with pytest.raises(ValueError, match="layer must be in"):
        HiddenStateTeacher(model, tokenizer, layer=5)


@pytest.mark.parametrize("teacher", ["hidden"])
def test_distill_lm_end_to_end_saves_language_models_with_the_lms_tokenizer(tiny_lm, tmp_path, teacher):
    folder, _, tokenizer = tiny_lm
    recipe = RecipeConfig.preset("quick", num_states=4, lvd_windows=0, phase1_epochs=1, phase2_epochs=1,
                                 batch_size=32, eval_splits="valid,test", eval_protocols="chunk", progress=False,
                                 device="cpu", cache_dir=str(tmp_path / "emb"), kmeans_backend="torch")
    config = DistillLMConfig(str(folder), recipe, num_samples=64, heldout_samples=16, sampling=SETTINGS,
                             teacher=teacher, compare_random=True, sample_cache_dir=str(tmp_path / "samples"))
    result = distill_lm(config, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(report["models"]) == {"lvd", "random"}
    for init in ("lvd", "random"):
        lm = hmmlvd.load(tmp_path / "out" / init)
        assert isinstance(lm, hmmlvd.LanguageModel) and lm.hmm.seq_len == 6 and lm.hmm.num_states == 4
        assert lm.tokenizer.vocab_size == len(tokenizer) == lm.hmm.vocab_size
        assert lm.encode("the river") == tokenizer.encode("the river", add_special_tokens=False)
        assert len(lm.generate("", max_new_tokens=3, seed=0)) == 1
        assert lm.score(["the river bank"])[0].num_tokens == 3
        # the reported held-out figure is the HMM's own mean log-likelihood per token of the test samples
        test, _ = lm_samples(*load_causal_lm(folder, "cpu")[0:2], 16, SETTINGS, split="test",
                             cache_dir=tmp_path / "samples", progress=False)
        expected = float(lm.hmm.log_likelihood(test).sum()) / test.numel()
        assert report["models"][init]["test_log_likelihood_per_token"] == pytest.approx(expected, abs=1e-6)
        assert result.models[init].hmm.num_states == 4
    assert report["lm_test_log_likelihood_per_token"] < 0
