"""DEBD loader (the real files are optional; synthetic files always run)."""
import lzma
import os
from pathlib import Path

import pytest

from hmmlvd.data.debd import DEBD_ENV, debd_dir, load_debd


def write_debd(folder, name, rows_per_split):
    for split, rows in rows_per_split.items():
        text = "\n".join(",".join(str(v) for v in row) for row in rows) + "\n"
        with lzma.open(folder / f"{name}.{split}.data.xz", "wt") as handle:
            handle.write(text)


def test_load_debd_reads_xz_splits(tmp_path, monkeypatch):
    rows = {"train": [[0, 1, 1], [1, 0, 0]], "valid": [[1, 1, 1]], "test": [[0, 0, 0], [0, 1, 0], [1, 1, 0]]}
    write_debd(tmp_path, "toy", rows)
    monkeypatch.setenv(DEBD_ENV, str(tmp_path))
    data = load_debd("toy")
    assert {k: v.tolist() for k, v in data.items()} == rows
    with pytest.raises(ValueError, match="not found"):
        load_debd("missing", root=tmp_path)
    write_debd(tmp_path, "bad", {"train": [[0, 2]], "valid": [[0, 1]], "test": [[0, 1]]})
    with pytest.raises(ValueError, match="0/1"):
        load_debd("bad", root=tmp_path)


def test_debd_has_no_default_folder(monkeypatch):
    monkeypatch.delenv(DEBD_ENV, raising=False)
    with pytest.raises(ValueError, match=f"root=.*\\${DEBD_ENV}"):
        load_debd("nltcs")
    assert debd_dir("somewhere") == Path("somewhere")


REAL = Path(os.environ.get(DEBD_ENV, Path(__file__).resolve().parents[3] / "shared" / "data" / "debd"))


@pytest.mark.skipif(not (REAL / "nltcs.train.data.xz").is_file(),
                    reason=f"DEBD not found (set ${DEBD_ENV} to the folder with nltcs.*.data.xz)")
def test_real_debd_nltcs_shapes():
    data = load_debd("nltcs", REAL)
    assert [tuple(data[s].shape) for s in ("train", "valid", "test")] == [(16181, 16), (2157, 16), (3236, 16)]
