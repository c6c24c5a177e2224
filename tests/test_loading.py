"""hmmlvd.load: every artefact folder opens as the model its config.json names; unknown ones are refused."""
import json

import pytest
import torch

import hmmlvd
from hmmlvd import HMM, HMMConfig, LanguageModel, pc
from hmmlvd.data.vocab import Vocab
from hmmlvd.io import CONFIG_FILE
from hmmlvd.loading import MODEL_TYPES
from tests.pc.references import all_assignments, mixed_circuit


def _hmm(vocab_size=5):
    return HMM.random(HMMConfig(num_states=3, vocab_size=vocab_size, seq_len=4), seed=2, dtype=torch.float64)


def _assert_same_hmm(loaded, original):
    assert loaded.config == original.config
    for name, group in original.parameter_groups().items():
        torch.testing.assert_close(loaded.parameter_groups()[name].values.double(), group.values, rtol=0, atol=1e-7)


def test_load_opens_an_hmm(tmp_path):
    hmm = _hmm()
    hmm.save_pretrained(tmp_path)
    loaded = hmmlvd.load(tmp_path)
    assert type(loaded) is HMM
    _assert_same_hmm(loaded, hmm)


def test_load_opens_a_language_model_which_also_opens_as_its_hmm(tmp_path):
    vocab = Vocab.from_corpus(["a b c", "c b"])
    lm = LanguageModel(_hmm(vocab.vocab_size), vocab)
    lm.save_pretrained(tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["model_type"] == "language_model"
    loaded = hmmlvd.load(tmp_path)
    assert type(loaded) is LanguageModel and loaded.tokenizer.words == vocab.words
    _assert_same_hmm(loaded.hmm, lm.hmm)
    _assert_same_hmm(HMM.from_pretrained(tmp_path), lm.hmm)


def test_an_hmm_folder_with_a_tokenizer_beside_it_opens_as_a_language_model(tmp_path):
    vocab = Vocab.from_corpus(["a b c"])
    hmm = _hmm(vocab.vocab_size)
    hmm.save_pretrained(tmp_path)                   # what `hmmlvd train` writes: the HMM plus its tokenizer
    vocab.save(tmp_path)
    _assert_same_hmm(LanguageModel.from_pretrained(tmp_path).hmm, hmm)


def test_load_opens_a_circuit(tmp_path):
    circuit = pc.Circuit(mixed_circuit(), seed=3, dtype=torch.float64)
    circuit.save_pretrained(tmp_path)
    loaded = hmmlvd.load(tmp_path)
    assert type(loaded) is pc.Circuit
    data = all_assignments([3, 3, 3])
    torch.testing.assert_close(loaded.log_likelihood(data).double(), circuit.log_likelihood(data), rtol=0, atol=1e-5)


def test_folders_written_by_earlier_versions_still_load(tmp_path):
    hmm = _hmm()
    hmm.save_pretrained(tmp_path / "hmm")
    config = json.loads((tmp_path / "hmm" / CONFIG_FILE).read_text())
    (tmp_path / "hmm" / CONFIG_FILE).write_text(json.dumps({**config, "model_type": "hmmlvd.hmm"}))
    _assert_same_hmm(hmmlvd.load(tmp_path / "hmm"), hmm)

    circuit = pc.Circuit(mixed_circuit(), seed=3, dtype=torch.float64)
    circuit.save_pretrained(tmp_path / "pc")
    config = json.loads((tmp_path / "pc" / CONFIG_FILE).read_text())
    old = {"format": "hmmlvd.pc.circuit", "version": 1, "nodes": config["nodes"]}     # the keys written before
    (tmp_path / "pc" / CONFIG_FILE).write_text(json.dumps(old))
    data = all_assignments([3, 3, 3])
    torch.testing.assert_close(pc.Circuit.from_pretrained(tmp_path / "pc", dtype=torch.float64).log_likelihood(data),
                               circuit.log_likelihood(data), rtol=0, atol=1e-12)
    assert type(hmmlvd.load(tmp_path / "pc")) is pc.Circuit


def test_unknown_and_missing_model_types_are_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        hmmlvd.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text('{"model_type": "bert", "format_version": 1}')
    with pytest.raises(ValueError, match=r"model_type 'bert'.*known model types: \['circuit', 'hmm'"):
        hmmlvd.load(tmp_path)
    (tmp_path / CONFIG_FILE).write_text('{"num_states": 3}')
    with pytest.raises(ValueError, match="no model_type"):
        hmmlvd.load(tmp_path)


def test_every_registered_model_type_round_trips_its_own_name(tmp_path):
    """Each loader class reads back what it writes: the registry key is the model_type it saves."""
    saved = {"hmm": _hmm(), "circuit": pc.Circuit(mixed_circuit()),
             "language_model": LanguageModel(_hmm(4), Vocab.from_corpus(["a b"]))}
    for model_type, cls in MODEL_TYPES.items():
        if model_type not in saved:
            continue                                # joined by another module with its own tests
        saved[model_type].save_pretrained(tmp_path / model_type)
        assert json.loads((tmp_path / model_type / CONFIG_FILE).read_text())["model_type"] == model_type
        assert type(hmmlvd.load(tmp_path / model_type)) is cls
    assert set(saved) <= set(MODEL_TYPES)
