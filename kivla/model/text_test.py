import pytest

from kivla.model.text import SPECIAL_TOKENS, TextTokenizer

CORPUS = ["Put the red circle on the blue square.", "What color is the circle?", "the circle is red"]


def test_fit_encode_decode_and_specials(tmp_path):
    tok = TextTokenizer.fit(CORPUS)
    for index, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_id(token) == index
    ids = tok.encode("the RED circle")
    assert len(ids) == 3 and min(ids) >= len(SPECIAL_TOKENS)
    assert tok.decode(ids) == "the red circle"
    assert tok.encode("a purple circle")[0] == tok.token_id("<unk>")
    path = tmp_path / "sub" / "text.json"
    tok.save(path)
    loaded = TextTokenizer.load(path)
    assert loaded.vocab_size == tok.vocab_size and loaded.encode("the red circle") == ids


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        TextTokenizer.load(tmp_path / "nope.json")
