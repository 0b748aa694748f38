"""A tiny random CLIP (both towers, 32 px images, a character-level CLIP tokenizer) saved as
transformers saves a CLIP folder: what the CLIP loaders and text-driven styles are tested with."""
from __future__ import annotations

from pathlib import Path

import torch

from ..types import PathLike


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's byte-to-unicode table: the 256 symbols byte-level BPE starts from."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_clip(folder: PathLike, seed: int = 0, projection_dim: int = 16) -> Path:
    """Write a random CLIP (one layer per tower) with its tokenizer into ``folder`` (transformers >= 5)."""
    import transformers

    folder = Path(folder)
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    tok = transformers.CLIPTokenizer(vocab=vocab, merges=[])
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=projection_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.CLIPModel(cfg)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder
