"""Image loaders on small files written in the real formats, byte by byte, and their refusals."""
import gzip
import struct

import numpy as np
import pytest
import torch

from hmmlvd.data import IMAGE_DIR_ENV, ImageSet, expected_files, load_images, train_valid_split
from hmmlvd.data.images import FASHION_MNIST_DEBIAN_DIR

RNG = np.random.default_rng(0)


def idx_bytes(magic, array):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in array.shape) + array.tobytes()


def write_mnist(folder, sizes=(("train", 5), ("t10k", 3)), gz=True):
    written = {}
    for prefix, n in sizes:
        images, labels = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8), RNG.integers(0, 10, n, dtype=np.uint8)
        for kind, magic, array in (("images-idx3", 0x803, images), ("labels-idx1", 0x801, labels)):
            path = folder / f"{prefix}-{kind}-ubyte{'.gz' if gz else ''}"
            data = idx_bytes(magic, array)
            path.write_bytes(gzip.compress(data) if gz else data)
        written[prefix] = (images, labels)
    return written


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    written = write_mnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        loaded = load_images("mnist", tmp_path, split)
        images, labels = written[prefix]
        assert loaded.images.dtype == torch.uint8 and loaded.labels.dtype == torch.int64
        assert loaded.images.shape == (len(images), 1, 28, 28) and loaded.size == (28, 28) and loaded.channels == 1
        assert loaded.images[:, 0].numpy().tobytes() == images.tobytes()
        assert loaded.labels.tolist() == labels.tolist() and loaded.num_categories == 256


def test_idx_refusals(tmp_path):
    write_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(0x803, np.zeros(3, np.uint8))))           # image magic on labels
    with pytest.raises(ValueError, match="magic 0x00000801"):
        load_images("mnist", tmp_path, "test")
    labels.write_bytes(gzip.compress(idx_bytes(0x801, np.zeros(3, np.uint8))[:-1]))      # one byte short
    with pytest.raises(ValueError, match="truncated"):
        load_images("mnist", tmp_path, "test")
    labels.write_bytes(gzip.compress(idx_bytes(0x801, np.zeros(3, np.uint8)) + b"\0"))   # one byte long
    with pytest.raises(ValueError, match="longer"):
        load_images("mnist", tmp_path, "test")
    labels.write_bytes(gzip.compress(idx_bytes(0x801, np.zeros(4, np.uint8))))           # 4 labels, 3 images
    with pytest.raises(ValueError, match="4 labels for 3 images"):
        load_images("mnist", tmp_path, "test")
    labels.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="gzip"):
        load_images("mnist", tmp_path, "test")


def test_missing_files_message_names_files_folder_and_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError) as error:
        load_images("fashion-mnist", tmp_path, "test")
    message = str(error.value)
    for needed in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", str(tmp_path), "root=",
                   "$HMMLVD_FASHION_MNIST", "dataset-fashion-mnist"):
        assert needed in message
    monkeypatch.delenv(IMAGE_DIR_ENV["cifar10"], raising=False)
    with pytest.raises(ValueError, match=r"no folder given for cifar10.*\$HMMLVD_CIFAR10.*data_batch_1.bin"):
        load_images("cifar10")
    with pytest.raises(ValueError, match="missing .*data_batch_5.bin"):
        (tmp_path / "data_batch_1.bin").write_bytes(bytes(3073))
        load_images("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown image dataset"):
        load_images("svhn", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_images("mnist", tmp_path, "valid")


def test_environment_variable_points_the_loader(tmp_path, monkeypatch):
    written = write_mnist(tmp_path, gz=False)
    monkeypatch.setenv("HMMLVD_FASHION_MNIST", str(tmp_path))
    loaded = load_images("fashion-mnist", split="test")
    assert loaded.images[:, 0].numpy().tobytes() == written["t10k"][0].tobytes()


def cifar_records(n):
    """Records built pixel by pixel from an HWC image, the layout people look at."""
    images_hwc = RNG.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = RNG.integers(0, 10, n, dtype=np.uint8)
    raw = bytearray()
    for image, label in zip(images_hwc, labels):
        raw.append(int(label))
        for channel in range(3):
            for row in range(32):
                raw.extend(int(image[row, col, channel]) for col in range(32))
    return bytes(raw), images_hwc, labels


def test_cifar_round_trip_and_nested_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected_images, expected_labels = [], []
    for name in expected_files("cifar10", "train"):
        raw, images_hwc, labels = cifar_records(2)
        (folder / name).write_bytes(raw)
        expected_images.append(images_hwc), expected_labels.append(labels)
    (folder / "test_batch.bin").write_bytes(cifar_records(1)[0])
    loaded = load_images("cifar10", tmp_path, "train")                       # finds the subfolder
    assert loaded.images.shape == (10, 3, 32, 32) and loaded.channels == 3
    assert torch.equal(loaded.images.permute(0, 2, 3, 1), torch.from_numpy(np.concatenate(expected_images)))
    assert loaded.labels.tolist() == np.concatenate(expected_labels).tolist()
    (folder / "test_batch.bin").write_bytes(cifar_records(1)[0][:-1])
    with pytest.raises(ValueError, match="whole number of CIFAR-10 records of 3073 bytes"):
        load_images("cifar10", folder, "test")
    (folder / "test_batch.bin").write_bytes(bytes([10]) + bytes(3072))
    with pytest.raises(ValueError, match="label byte 10"):
        load_images("cifar10", folder, "test")


def write_npz(path, side, n, **override):
    data = RNG.integers(0, 256, (n, 3 * side * side), dtype=np.uint8)
    labels = RNG.integers(1, 1001, n)
    arrays = {"data": data, "labels": labels, "mean": np.zeros(3 * side * side)} | override
    np.savez(path, **arrays)
    return data, labels


@pytest.mark.parametrize("side", [32, 64])
def test_imagenet_round_trip(tmp_path, side):
    name = f"imagenet{side}"
    written = [write_npz(tmp_path / file, side, 2) for file in expected_files(name, "train")]
    write_npz(tmp_path / "val_data.npz", side, 3)
    loaded = load_images(name, tmp_path, "train")
    assert loaded.images.shape == (20, 3, side, side) and loaded.size == (side, side)
    data = np.concatenate([w[0] for w in written])
    for i in (0, 7, 19):                                                    # channel-major: R plane, G, B
        for c, y, x in ((0, 0, 0), (1, side - 1, 3), (2, 5, side - 1)):
            assert loaded.images[i, c, y, x] == data[i, c * side * side + y * side + x]
    assert loaded.labels.tolist() == (np.concatenate([w[1] for w in written]) - 1).tolist()   # 0-based
    assert len(load_images(name, tmp_path, "test")) == 3


def test_imagenet_refusals(tmp_path):
    path = tmp_path / "val_data.npz"
    np.savez(path, data=np.array([object()] * 3, dtype=object), labels=np.array([1]))
    with pytest.raises(ValueError, match="pickled object arrays"):
        load_images("imagenet32", tmp_path, "test")
    write_npz(path, 32, 2, data=np.zeros((2, 3 * 64 * 64), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 \[N, 3072\]"):
        load_images("imagenet32", tmp_path, "test")
    write_npz(path, 32, 2, data=np.zeros((2, 3072), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        load_images("imagenet32", tmp_path, "test")
    write_npz(path, 32, 2, labels=np.array([0, 5]))
    with pytest.raises(ValueError, match="1-based"):
        load_images("imagenet32", tmp_path, "test")
    np.savez(path, data=np.zeros((2, 3072), np.uint8))
    with pytest.raises(ValueError, match="lacks"):
        load_images("imagenet32", tmp_path, "test")
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="npz"):
        load_images("imagenet32", tmp_path, "test")


def test_digits_keep_seventeen_levels():
    from sklearn.datasets import load_digits

    reference = load_digits()
    train, test = load_images("digits"), load_images("digits", split="test")
    assert train.images.shape == (1500, 1, 8, 8) and len(test) == 297 and train.num_categories == 17
    assert torch.equal(torch.cat([train.images, test.images]).flatten(1).long(),
                       torch.from_numpy(reference.data.astype(np.int64)))
    assert torch.cat([train.labels, test.labels]).tolist() == reference.target.tolist()
    with pytest.raises(ValueError, match="scikit-learn"):
        load_images("digits", "somewhere")


def test_train_valid_split_takes_the_last_images():
    images = ImageSet("toy", torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1), torch.arange(10), 256)
    train, valid = train_valid_split(images, valid_size=3)
    assert train.labels.tolist() == list(range(7)) and valid.labels.tolist() == [7, 8, 9]
    assert valid.images.flatten().tolist() == [7, 8, 9]
    with pytest.raises(ValueError, match="valid_size"):
        train_valid_split(images, valid_size=10)
    with pytest.raises(ValueError, match="uint8"):
        ImageSet("toy", torch.zeros(2, 1, 1, 1), torch.zeros(2, dtype=torch.int64), 256)


@pytest.mark.skipif(not (FASHION_MNIST_DEBIAN_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("HMMLVD_FASHION_MNIST", raising=False)
    test = load_images("fashion-mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert int(test.images.max()) == 255 and sorted(test.labels.unique().tolist()) == list(range(10))
    assert test.labels[:5].tolist() == [9, 2, 1, 1, 6]                      # the first test labels


FIX = "fresh, complete copy of the official file"


def test_idx_corruptions_name_the_file_and_the_fix(tmp_path):
    write_mnist(tmp_path, sizes=(("t10k", 3),))
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    complete = idx_bytes(0x803, np.zeros((3, 28, 28), np.uint8))
    cases = [
        (gzip.compress(complete[:10]), r"truncated IDX header \(10 bytes, need 16\)"),     # header cut short
        (gzip.compress(complete)[:-30], "not a readable gzip file, corrupt or truncated"),  # gzip cut short
        (gzip.compress(complete)[:10] + bytes(40), "not a readable gzip file"),            # deflate stream garbage
        (gzip.compress(complete[:-5]), "is truncated"),                                     # pixels cut short
        (gzip.compress(idx_bytes(0x803, np.zeros((3, 32, 32), np.uint8))), "must be 28x28, found 32x32"),
        (gzip.compress(idx_bytes(0x803, np.zeros((3, 28, 14), np.uint8))), "must be 28x28, found 28x14"),
    ]
    for content, message in cases:
        images.write_bytes(content)
        with pytest.raises(ValueError, match=message) as error:
            load_images("fashion-mnist", tmp_path, "test")
        assert str(images) in str(error.value) and FIX in str(error.value), str(error.value)


def test_a_dataset_folder_with_missing_or_unreadable_files(tmp_path):
    write_mnist(tmp_path, sizes=(("t10k", 3),))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"missing t10k-labels-idx1-ubyte.*root= \(or --data-dir\)"):
        load_images("mnist", tmp_path, "test")
    with pytest.raises(ValueError, match=f"in {tmp_path / 'nowhere'}, missing"):
        load_images("mnist", tmp_path / "nowhere", "test")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"")                          # an empty file
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: truncated IDX header \(0 bytes") as error:
        load_images("mnist", tmp_path, "test")
    assert FIX in str(error.value)


def test_cifar_corruptions_name_the_file_and_the_fix(tmp_path):
    path = tmp_path / "test_batch.bin"
    raw = cifar_records(2)[0]
    for content, message in ((raw[:-100], "6046 bytes is not a whole number of CIFAR-10 records of 3073 bytes"),
                             (raw[:3000], "truncated, or not the binary version"),
                             (b"", "0 bytes"),
                             (bytes([11]) + bytes(3072), "label byte 11")):
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message) as error:
            load_images("cifar10", tmp_path, "test")
        assert str(path) in str(error.value) and FIX in str(error.value)


def test_imagenet_corruptions_name_the_file_and_the_fix(tmp_path):
    path = tmp_path / "val_data.npz"
    write_npz(path, 32, 4)
    complete = path.read_bytes()
    for cut in (len(complete) // 2, len(complete) - 30):                               # truncated archives
        path.write_bytes(complete[:cut])
        with pytest.raises(ValueError, match="not a readable npz file, corrupt or truncated") as error:
            load_images("imagenet32", tmp_path, "test")
        assert str(path) in str(error.value) and FIX in str(error.value)
    write_npz(path, 64, 2)                                                                # 64-px file as 32-px
    with pytest.raises(ValueError, match=r"uint8 \[N, 3072\].*found uint8 \[2, 12288\]; is it the 32x32") as error:
        load_images("imagenet32", tmp_path, "test")
    assert str(path) in str(error.value) and FIX in str(error.value)
    write_npz(path, 32, 3, labels=np.array([1, 2]))                                      # 2 labels, 3 images
    with pytest.raises(ValueError, match=r"`labels` must be integers \[3\]"):
        load_images("imagenet32", tmp_path, "test")
    np.savez(path, data=np.zeros((2, 3072), np.uint8), labels=np.array([None, None], dtype=object))
    with pytest.raises(ValueError, match="pickled object arrays, which are never loaded"):
        load_images("imagenet32", tmp_path, "test")
