import pytest
import torch

from hmmlvd.data import MISSING, chunk_windows, num_windows, windows


def test_windows_are_views_with_any_stride():
    stream = torch.arange(100)
    for stride in (1, 3, 32):
        view = windows(stream, 32, stride)
        assert view.shape == (num_windows(100, 32, stride), 32)
        assert view.data_ptr() == stream.data_ptr()  # no copy of the stream
        for i in range(len(view)):
            assert torch.equal(view[i], stream[i * stride:i * stride + 32])


def test_short_stream_has_no_full_window():
    assert windows(torch.arange(5), 8, 1).shape == (0, 8)


def test_chunk_windows_pad_the_tail_with_missing():
    stream = torch.arange(10)
    chunks = chunk_windows(stream, 4)
    assert chunks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, MISSING, MISSING]]
    exact = torch.arange(8)
    assert chunk_windows(exact, 4).data_ptr() == exact.data_ptr()


def test_bad_streams_raise():
    with pytest.raises(ValueError, match="1-D LongTensor"):
        windows(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="stride"):
        windows(torch.arange(10), 4, 0)
