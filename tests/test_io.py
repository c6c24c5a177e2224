"""hmmlvd.io: atomic writes, safetensors round trips, refusal of damaged files, and the config.json schema."""
import json
import os

import pytest
import torch

from hmmlvd import io


def test_atomic_write_leaves_the_old_file_and_no_partial_file_on_error(tmp_path, monkeypatch):
    path = tmp_path / "data.bin"
    io.atomic_write_bytes(path, b"old contents")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_bytes(path, b"new contents that never land")
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]          # the temporary file is gone


def test_atomic_write_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "x.json"
    io.atomic_write_json(path, {"k": [1, 2]})
    io.atomic_write_json(path, {"k": 3})
    assert json.loads(path.read_text()) == {"k": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_atomic_writes_get_the_permissions_a_plain_write_would(tmp_path):
    previous = os.umask(0o022)
    try:
        io.atomic_write_bytes(tmp_path / "new.png", b"picture")
        assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o644          # not mkstemp's 0600
        (tmp_path / "new.png").chmod(0o640)
        io.atomic_write_bytes(tmp_path / "new.png", b"another picture")
        assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o640          # an existing file keeps its mode
    finally:
        os.umask(previous)


def test_tensors_round_trip_with_metadata(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.float64).reshape(2, 3).T,          # not contiguous
               "b": torch.tensor([1, -1], dtype=torch.long), "c": torch.ones(2, 2, dtype=torch.float16)}
    io.save_tensors(tmp_path / "t.safetensors", tensors, {"model_type": "x", "n": [1, 2]})
    loaded, metadata = io.load_tensors(tmp_path / "t.safetensors")
    assert metadata == {"model_type": "x", "n": [1, 2]}
    assert sorted(loaded) == ["a", "b", "c"]
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)


@pytest.mark.parametrize("content", [b"", b"\x80\x04\x95pickle bytes", b"{\"not\": \"safetensors\"}",
                                     b"\xff" * 64])
def test_non_safetensors_files_are_refused(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        io.load_tensors(path)


def test_truncated_safetensors_and_missing_files_are_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    io.save_tensors(path, {"a": torch.randn(100, 10)})
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 20):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="corrupted or truncated"):
            io.load_tensors(path)
    with pytest.raises(ValueError, match="does not exist"):
        io.load_tensors(tmp_path / "absent.safetensors")


def test_read_json_refuses_missing_and_malformed_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        io.read_json(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        io.read_json(tmp_path / "bad.json")
    (tmp_path / "bytes.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="not valid JSON"):
        io.read_json(tmp_path / "bytes.json")


def test_config_schema_round_trip_and_checks(tmp_path):
    io.write_config(tmp_path, "hmm", 1, {"num_states": 3})
    assert json.loads((tmp_path / io.CONFIG_FILE).read_text()) == {"model_type": "hmm", "format_version": 1,
                                                                   "num_states": 3}
    assert io.read_config(tmp_path, ("hmm", "language_model"), 1)["num_states"] == 3
    with pytest.raises(ValueError, match="format_version 1 for model_type 'hmm'; this hmmlvd reads version 2"):
        io.read_config(tmp_path, "hmm", 2)
    with pytest.raises(ValueError, match=r"not a saved hmmlvd circuit \(its model_type is 'hmm'\)"):
        io.read_config(tmp_path, "circuit", 1)
    with pytest.raises(ValueError, match="may not override"):
        io.write_config(tmp_path, "hmm", 1, {"format_version": 2})


def test_config_keys_of_earlier_versions_are_read(tmp_path):
    (tmp_path / io.CONFIG_FILE).write_text(json.dumps({"format": "hmmlvd.pc.circuit", "version": 1, "nodes": []}))
    assert io.read_model_type(tmp_path) == ("circuit", {"format": "hmmlvd.pc.circuit", "version": 1, "nodes": [],
                                                        "model_type": "circuit", "format_version": 1})
    (tmp_path / io.CONFIG_FILE).write_text(json.dumps({"model_type": "hmmlvd.hmm", "format_version": 1}))
    assert io.read_config(tmp_path, "hmm", 1)["model_type"] == "hmm"


@pytest.mark.parametrize("content", ['[1, 2]', '{"num_states": 3}', '{"model_type": 7}'])
def test_configs_without_a_model_type_are_refused(tmp_path, content):
    (tmp_path / io.CONFIG_FILE).write_text(content)
    with pytest.raises(ValueError, match="model_type"):
        io.read_model_type(tmp_path)


def test_cache_folder_follows_hmmlvd_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HMMLVD_CACHE", str(tmp_path))
    assert io.cache_folder("kernels") == tmp_path / "kernels"
    monkeypatch.delenv("HMMLVD_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert io.cache_folder("embeddings") == tmp_path / "home" / ".cache" / "hmmlvd" / "embeddings"
