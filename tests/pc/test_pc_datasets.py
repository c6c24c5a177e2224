"""DEBD and Fashion-MNIST loaders (real files are optional; synthetic files always run)."""
import gzip
import lzma

import pytest
import torch

from hmmlvd.pc.datasets import FASHION_MNIST_DEFAULT, debd_dir, load_debd, load_fashion_mnist


def write_debd(folder, name, rows_per_split):
    for split, rows in rows_per_split.items():
        text = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
        with lzma.open(folder / f"{name}.{split}.data.xz", "wt") as handle:
            handle.write(text)


def test_load_debd_reads_xz_splits(tmp_path, monkeypatch):
    rows = {"train": [[0, 1, 1], [1, 0, 0]], "valid": [[1, 1, 1]], "test": [[0, 0, 0], [0, 1, 0], [1, 1, 0]]}
    write_debd(tmp_path, "toy", rows)
    monkeypatch.setenv("HMMLVD_DEBD", str(tmp_path))
    data = load_debd("toy")
    assert {k: v.tolist() for k, v in data.items()} == rows
    with pytest.raises(ValueError, match="not found"):
        load_debd("missing", root=tmp_path)
    write_debd(tmp_path, "bad", {"train": [[0, 2]], "valid": [[0, 1]], "test": [[0, 1]]})
    with pytest.raises(ValueError, match="0/1"):
        load_debd("bad", root=tmp_path)


def write_idx(path, array):
    header = bytes([0, 0, 8, array.dim()]) + b"".join(s.to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.to(torch.uint8).numpy().tobytes())


def test_load_fashion_mnist_reads_idx_files(tmp_path):
    images = torch.randint(0, 256, (3, 28, 28))
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", torch.tensor([3, 1, 4]))
    data = load_fashion_mnist(tmp_path)
    assert torch.equal(data["test"][0], images.reshape(3, 784)) and data["train"][1].tolist() == [3, 1, 4]
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes([1, 2]))
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(ValueError, match="dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


@pytest.mark.skipif(not (debd_dir() / "nltcs.train.data.xz").is_file(),
                    reason="DEBD not found (set HMMLVD_DEBD to the folder with nltcs.*.data.xz)")
def test_real_debd_nltcs_shapes():
    data = load_debd("nltcs")
    assert [tuple(data[s].shape) for s in ("train", "valid", "test")] == [(16181, 16), (2157, 16), (3236, 16)]


@pytest.mark.skipif(not (FASHION_MNIST_DEFAULT / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_shapes():
    data = load_fashion_mnist()
    assert data["train"][0].shape == (60000, 784) and data["test"][0].shape == (10000, 784)
    assert int(data["test"][0].max()) == 255 and sorted(data["test"][1].unique().tolist()) == list(range(10))
