"""save_pretrained / from_pretrained: round trips and clear errors on damaged folders."""
import json

import pytest
import torch

from hmmlvd import HMM, HMMConfig


@pytest.mark.parametrize("homogeneous", [False, True])
def test_round_trip(tmp_path, homogeneous):
    hmm = HMM.random(HMMConfig(num_states=3, vocab_size=7, seq_len=5, homogeneous=homogeneous), seed=4)
    hmm.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = HMM.from_pretrained(tmp_path)
    assert loaded.config == hmm.config
    for name, group in hmm.parameter_groups().items():
        assert torch.equal(group.values, loaded.parameter_groups()[name].values)


def _saved(tmp_path):
    HMM.random(HMMConfig(num_states=3, vocab_size=7, seq_len=5)).save_pretrained(tmp_path)
    return tmp_path


def test_truncated_weights_give_clear_error(tmp_path):
    weights = _saved(tmp_path) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        HMM.from_pretrained(tmp_path)


def test_garbage_weights_give_clear_error(tmp_path):
    (_saved(tmp_path) / "model.safetensors").write_bytes(b"\x80\x04not a safetensors file at all")
    with pytest.raises(ValueError, match="safetensors"):
        HMM.from_pretrained(tmp_path)


def test_mismatched_config_gives_clear_error(tmp_path):
    config_path = _saved(tmp_path) / "config.json"
    config = json.loads(config_path.read_text())
    config["num_states"] = 4
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        HMM.from_pretrained(tmp_path)


def test_missing_and_foreign_configs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        HMM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not a saved hmmlvd hmm"):
        HMM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        HMM.from_pretrained(tmp_path)


def test_unnormalised_weights_are_rejected(tmp_path):
    hmm = HMM.random(HMMConfig(num_states=3, vocab_size=7, seq_len=5))
    hmm.initial = hmm.initial * 2
    hmm.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="sum to 1"):
        HMM.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["initial", "transitions", "emissions"])
@pytest.mark.parametrize("value", [float("nan"), -0.1, float("inf")])
def test_nan_or_negative_probabilities_are_rejected(tmp_path, name, value):
    hmm = HMM.random(HMMConfig(num_states=3, vocab_size=7, seq_len=5))
    getattr(hmm, name).view(-1)[0] = value
    hmm.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"{name} contains negative, NaN or infinite probabilities"):
        HMM.from_pretrained(tmp_path)


@pytest.mark.parametrize("version", [2, 0, None])
def test_another_format_version_is_rejected(tmp_path, version):
    config_path = _saved(tmp_path) / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "format_version": version}))
    with pytest.raises(ValueError, match=f"format_version {version!r} for model_type 'hmm'; this hmmlvd reads "
                                         "version 1"):
        HMM.from_pretrained(tmp_path)


def test_the_config_header_follows_the_shared_schema(tmp_path):
    config = json.loads((_saved(tmp_path) / "config.json").read_text())
    assert (config["model_type"], config["format_version"]) == ("hmm", 1)
    assert {"num_states": 3, "vocab_size": 7, "seq_len": 5}.items() <= config.items()
