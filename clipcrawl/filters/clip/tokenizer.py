"""CLIP's byte-level BPE tokenizer without torch (for the core install's tiny model).

Vendored from open_clip's ``open_clip/tokenizer.py`` (``SimpleTokenizer``, clean="lower", no
reduction), itself copied from https://github.com/openai/CLIP. MIT License, Copyright (c) 2021
OpenAI; open_clip: MIT License, Copyright (c) 2012-2021 Gabriel Ilharco, Mitchell Wortsman, Nicholas
Carlini, Rohan Taori, Achal Dave, Vaishaal Shankar, John Miller, Hongseok Namkoong, Hannaneh
Hajishirzi, Ali Farhadi, Ludwig Schmidt. The licence text is in
``clipcrawl/assets/clip_tokenizer/LICENSE`` next to the vocabulary (``bpe_simple_vocab_16e6.txt.gz``,
the same file open_clip ships).

The only change: ``__call__`` returns a numpy int64 array instead of a torch LongTensor (open_clip's
package imports torch at import time). Token ids equal open_clip's
(tests/filters/clip/test_light_path.py).
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex as re

DEFAULT_CONTEXT_LENGTH = 77
BPE_PATH = Path(__file__).resolve().parents[2] / "assets" / "clip_tokenizer" / "bpe_simple_vocab_16e6.txt.gz"


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """utf-8 bytes -> printable unicode characters (the reversible byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(zip(word[:-1], word[1:]))


def basic_clean(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


class SimpleTokenizer:
    """open_clip's ``SimpleTokenizer`` (lower-case cleaning); ``tok(texts)`` -> int64 (N, context_length)."""

    def __init__(self, bpe_path: str | Path = BPE_PATH, context_length: int = DEFAULT_CONTEXT_LENGTH) -> None:
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        with gzip.open(bpe_path) as f:
            merges_text = f.read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in merges_text[1 : 49152 - 256 - 2 + 1]]
        vocab = list(bytes_to_unicode().values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(m) for m in merges)
        special_tokens = ["<start_of_text>", "<end_of_text>"]
        vocab.extend(special_tokens)
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {t: t for t in special_tokens}
        self.pat = re.compile(
            "|".join(special_tokens) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE,
        )
        self.vocab_size = len(self.encoder)
        self.sot_token_id = self.encoder["<start_of_text>"]
        self.eot_token_id = self.encoder["<end_of_text>"]
        self.context_length = context_length

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        text = whitespace_clean(basic_clean(text)).lower()
        for token in re.findall(self.pat, text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def decode(self, tokens: list[int]) -> str:
        text = "".join(self.decoder[t] for t in tokens)
        return bytearray([self.byte_decoder[c] for c in text]).decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: str | list[str], context_length: int | None = None) -> np.ndarray:
        if isinstance(texts, str):
            texts = [texts]
        n = context_length or self.context_length
        result = np.zeros((len(texts), n), dtype=np.int64)
        for i, text in enumerate(texts):
            tokens = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(tokens) > n:
                tokens = tokens[:n]
                tokens[-1] = self.eot_token_id
            result[i, : len(tokens)] = tokens
        return result


@lru_cache(maxsize=1)
def default_tokenizer() -> SimpleTokenizer:
    """One shared instance (building the merge table takes ~0.3 s)."""
    return SimpleTokenizer()
