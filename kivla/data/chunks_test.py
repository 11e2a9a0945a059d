from kivla.data.chunks import load_chunks, save_chunks
from kivla.tokenizers.synthetic import smooth_chunks


def test_load_chunks_subset(tmp_path):
    save_chunks(tmp_path / "c.npz", smooth_chunks(50, seed=1))
    assert load_chunks(tmp_path / "c.npz", max_chunks=10).shape == (10, 50, 7)
