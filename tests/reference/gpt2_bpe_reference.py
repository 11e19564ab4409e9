#!/usr/bin/env python3
"""Independent Python reference of the GPT-2 byte-level BPE tokenizer (fixture generation only).

Written from the published algorithm (Radford et al. 2019, OpenAI's encoder.py design):
  1. split the text with the GPT-2 pre-tokenization pattern (the `regex` module, for \\p{L}/\\p{N});
  2. map each piece's bytes to printable code points (bytes_to_unicode);
  3. merge adjacent symbols by rank from vocab.bpe until no ranked pair is left;
  4. look the symbols up in encoder.json.

Bytes that are not valid UTF-8 are decoded with 'surrogateescape' (each invalid byte becomes its own
code point U+DC80..U+DCFF, which is neither a letter, a number nor whitespace), and encoded back the
same way, so any byte string round-trips exactly. The C++ tokenizer follows the same rule.

The toolkit never runs Python; this is used by gen_tokenizer_cases.py to write tests/fixtures/.
"""
import json
import os

import regex

PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    """Byte -> printable code point: printable Latin-1 bytes map to themselves, the others to 256+."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
                 list(range(ord("®"), ord("ÿ") + 1)))
    mapping = {}
    extra = 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


class Gpt2Bpe:
    def __init__(self, vocab_dir):
        with open(os.path.join(vocab_dir, "encoder.json"), encoding="utf-8") as f:
            self.encoder = json.load(f)
        with open(os.path.join(vocab_dir, "vocab.bpe"), encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.cache = {}

    def bpe(self, word):
        """Merges the lowest-ranked adjacent pair everywhere (left to right), until none is ranked."""
        if word in self.cache:
            return self.cache[word]
        symbols = list(word)
        while len(symbols) > 1:
            pairs = {(symbols[i], symbols[i + 1]) for i in range(len(symbols) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self.cache[word] = symbols
        return symbols

    def pieces(self, data: bytes):
        text = data.decode("utf-8", errors="surrogateescape")
        return [p.encode("utf-8", errors="surrogateescape") for p in PATTERN.findall(text)]

    def encode(self, data: bytes):
        ids = []
        for piece in self.pieces(data):
            word = "".join(self.byte_encoder[b] for b in piece)
            ids.extend(self.encoder[s] for s in self.bpe(word))
        return ids

    def decode(self, ids):
        byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        inverse = {v: k for k, v in self.encoder.items()}
        out = bytearray()
        for i in ids:
            token = inverse[i]
            if token == "<|endoftext|>":
                out += token.encode()
            else:
                out += bytes(byte_decoder[c] for c in token)
        return bytes(out)
