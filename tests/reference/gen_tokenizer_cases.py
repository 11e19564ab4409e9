#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer_cases.json from the independent Python reference.

Each case: {"name", "b64" (the input bytes), "ids" (expected token ids)}. Also a long-text case
for tinyshakespeare (read from ../shared/data at test time, never committed): the ids of the
first 20,000 bytes, plus the token count and an FNV-1a hash of all ids of the whole file.
Run: python3 tests/reference/gen_tokenizer_cases.py [VOCAB_DIR]   (default /work/main/data/vocab)
"""
import base64
import json
import os
import random
import sys

from gpt2_bpe_reference import Gpt2Bpe

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer_cases.json")
SHAKESPEARE = os.path.join(ROOT, "..", "shared", "data", "corpus", "tinyshakespeare.txt")
FORTUNES = "/usr/share/games/fortunes/fortunes"


def text_cases():
    s = {
        "empty": "",
        "hello": "Hello, world!",
        "contractions": "I'm sure they're here; we've seen it, she'll say he'd said it's John's.",
        "contractions_upper": "I'M SURE IT'S HE'LL 'S 'T 'RE",
        "contractions_odd": "'' ''s 's's rock'n'roll ' 'x 'll'll don't",
        "spaces_between": "a b  c   d    e",
        "spaces_leading": "   leading",
        "spaces_trailing": "trailing   ",
        "only_spaces": "     ",
        "tabs_newlines": "\t\ttabs\n\nnew lines\r\n\r\nend\n",
        "space_newline_mix": " \n \n  \n\t x",
        "unicode_spaces": "a\u3000b\u00a0c\u2028d\u2003 e\u0085f\u1680g",
        "fs_gs_rs_us": "x\x1c\x1d\x1e\x1fy \x1c z",
        "digits": "1234567890 3.14159 -42 +7e10 1,000,000",
        "digits_unicode": "x² ½ Ⅻ ١٢٣ ৩ 〇 ⁴²",
        "latin": "naïve café résumé Ærøskøbing straße",
        "cyrillic": "Привет, мир! Съешь же ещё этих мягких французских булок.",
        "cjk": "日本語のテキストです。中文测试。",
        "korean": "한국어 텍스트",
        "greek_hebrew_arabic": "Ελληνικά עברית العربية",
        "combining": "e\u0301 a\u0308 Z\u0324\u0354\u0367\u0311\u0313a\u0356\u032d",
        "ligature": "ﬁnance ﬀ",
        "emoji": "😀 😃😄 hi 👋🏽 there 👨‍👩‍👧‍👦 🇺🇸!",
        "control": "\x00\x01\x02\x1b[31mred\x1b[0m\x7f\x08",
        "endoftext_literal": "<|endoftext|>Hello<|endoftext|>",
        "code": "def f(x):\n    return x**2  # square\n\nif __name__ == '__main__':\n\tprint(f(3))\n",
        "punctuation": "!!!??? ... --- ((()))[]{}<> @#$%^&*_=+|\\/~`",
        "mixed_classes": "abc123def!!!ghi   jkl\u00e9\u0661\u0662",
        "long_letters": "a" * 5000,
        "long_punct": "!" * 3000,
        "long_spaces": " " * 2000 + "x",
        "long_alternating": "ab" * 2000,
        "long_digits": "1" * 1000,
        "long_words": " ".join(["supercalifragilisticexpialidocious"] * 200),
    }
    return [(name, text.encode("utf-8")) for name, text in s.items()]


def byte_cases():
    rng = random.Random(20240926)
    cases = [
        ("invalid_ff", b"\xff"),
        ("invalid_lone_lead", b"\xc3"),
        ("invalid_continuation", b"abc\x80def"),
        ("invalid_surrogate", b"x\xed\xa0\x80y"),
        ("invalid_overlong", b"\xc0\xaf \xe0\x80\xaf"),
        ("invalid_above_max", b"\xf4\x90\x80\x80 ok"),
        ("invalid_truncated_end", b"euro \xe2\x82"),
        ("invalid_truncated_mid", b"\xe2\x82A \xf0\x9f\x98 x"),
        ("invalid_between_letters", b"caf\xe9 na\xefve"),
        ("invalid_space_mix", b" \xff \xfe\xfd  \x80"),
        ("invalid_with_digits", b"12\xff34 \xff56"),
    ]
    for i in range(6):
        cases.append((f"random_bytes_{i}", bytes(rng.randrange(256) for _ in range(300))))
    # Random mixes of printable ASCII, whitespace, multi-byte characters and invalid bytes.
    alphabet = [b"a", b"Z", b" ", b"  ", b"\n", b"\t", b"'", b"s", b"1", b"!", b"\xc3\xa9",
                b"\xe2\x80\x83", b"\xf0\x9f\x98\x80", b"\xff", b"\x80", b"\xe3\x80\x80", b"\xd9\xa3"]
    for i in range(6):
        cases.append((f"random_mix_{i}", b"".join(rng.choice(alphabet) for _ in range(400))))
    return cases


def fnv1a_ids(ids):
    """FNV-1a 64-bit over the ids as little-endian uint32 (same in the C++ test)."""
    h = 0xCBF29CE484222325
    for i in ids:
        for k in range(4):
            h ^= (i >> (8 * k)) & 0xFF
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    vocab_dir = sys.argv[1] if len(sys.argv) > 1 else "/work/main/data/vocab"
    bpe = Gpt2Bpe(vocab_dir)
    cases = text_cases() + byte_cases()
    with open(FORTUNES, "rb") as f:
        cases.append(("fortunes_excerpt", f.read(6000)))
    out = {"cases": []}
    for name, data in cases:
        ids = bpe.encode(data)
        assert bpe.decode(ids) == data, name
        out["cases"].append({"name": name, "b64": base64.b64encode(data).decode(), "ids": ids})
    with open(SHAKESPEARE, "rb") as f:
        whole = f.read()
    all_ids = bpe.encode(whole)
    out["tinyshakespeare"] = {
        "file": "corpus/tinyshakespeare.txt",
        "file_bytes": len(whole),
        "prefix_bytes": 20000,
        "prefix_ids": bpe.encode(whole[:20000]),
        "total_tokens": len(all_ids),
        "fnv1a64_ids": f"{fnv1a_ids(all_ids):016x}",
    }
    with open(OUT, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(out['cases'])} cases, tinyshakespeare {len(all_ids)} tokens")


if __name__ == "__main__":
    main()
