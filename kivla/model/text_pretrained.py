"""A pretrained LM's own subword tokenizer (SmolLM2's BPE) behind kivla's text-tokenizer interface.

kivla's batch layout names five special tokens; a pretrained vocabulary has its own, so each maps
onto one of them (SmolLM2: `<bos>` = `<|im_start|>`, `<eos>` = `<|im_end|>`, `<pad>` =
`<|endoftext|>`; `<ans>` and `<act>` = `<jupyter_output>` and `<jupyter_code>`, markers of its code
data that never occur in English text). The state bins and action ids are the last ids of the
vocabulary (`VocabLayout(total=...)`), overwriting its rarest merges, as PaliGemma does.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tokenizers import Tokenizer

from kivla.model.text import ACT, ANS, BOS, EOS, PAD, UNK, TextTokenizer

SMOLLM2_SPECIALS = {PAD: "<|endoftext|>", UNK: "<|endoftext|>", BOS: "<|im_start|>", EOS: "<|im_end|>",
                    ANS: "<jupyter_output>", ACT: "<jupyter_code>"}  # fmt: skip


class PretrainedTextTokenizer(TextTokenizer):
    """kivla's `TextTokenizer` interface over a HF `tokenizer.json` with its own special tokens."""

    def __init__(self, tokenizer: Tokenizer, specials: dict[str, str] | None = None) -> None:
        self.tokenizer, self.specials = tokenizer, dict(specials or SMOLLM2_SPECIALS)
        for name, token in self.specials.items():
            if tokenizer.token_to_id(token) is None:
                raise ValueError(
                    f"PretrainedTextTokenizer: special {name} -> {token!r} is not in the vocabulary"
                )

    def token_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(self.specials.get(token, token))

    def save(self, path: str | os.PathLike) -> None:
        """Atomic write of the tokenizer JSON, with the special-token map under "kivla_specials"."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(self.tokenizer.to_str())
        data["kivla_specials"] = self.specials
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokenizer.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PretrainedTextTokenizer:
        data = json.loads(Path(path).read_text())
        specials = data.pop("kivla_specials", None)
        return cls(Tokenizer.from_str(json.dumps(data)), specials)


def load_text_tokenizer(path: str | os.PathLike) -> TextTokenizer | PretrainedTextTokenizer:
    """The tokenizer saved at `path`: kivla's word-level one, or a pretrained LM's subword one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text tokenizer: no tokenizer file at {path}")
    kind = json.loads(path.read_text()).get("model", {}).get("type")
    return TextTokenizer.load(path) if kind == "WordLevel" else PretrainedTextTokenizer.load(path)
