"""Interop check with Hugging Face `tokenizers`, step 2 of 2 (see hf-interop-export.ts).

Loads the kit's tokenizer.json files with `tokenizers.Tokenizer.from_file` and compares pre-tokens,
encodings and decodings with the kit's on every case. Exits non-zero if any ids or decodings differ.

Pre-tokens can differ on characters that are assigned in the Unicode version of the JavaScript engine
but not yet in that of HF's regex engine (e.g. CJK Extension H and J, U+31350–U+3347F, are letters in
Node 20 but unassigned in Oniguruma's Unicode 14 tables); those are counted and listed separately.
"""
import json
import sys
import unicodedata

from tokenizers import Tokenizer, __version__

folder = sys.argv[1] if len(sys.argv) > 1 else "hf-interop"
bpe = Tokenizer.from_file(f"{folder}/bpe.tokenizer.json")
byt = Tokenizer.from_file(f"{folder}/bytes.tokenizer.json")
cases = json.load(open(f"{folder}/cases.json", encoding="utf-8"))
failures = 0
pre_token_differences = 0
for case in cases:
    text = case["text"]
    pieces = [piece for piece, _ in bpe.pre_tokenizer.pre_tokenize_str(text)]
    if pieces != case["preTokens"]:
        pre_token_differences += 1
        newer = sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cn"})
        print(f"pre-tokens differ on a text with {len(newer)} code points unassigned in Python's Unicode {unicodedata.unidata_version}: {' '.join(newer[:6])}")
    for name, tok, expected in (("bpe", bpe, case["bpe"]), ("bytes", byt, case["bytes"])):
        ids = tok.encode(text).ids
        decoded = tok.decode(expected, skip_special_tokens=False)
        if ids != expected or decoded != text:
            failures += 1
            if failures <= 5:
                print(f"{name} differs on {text[:60]!r}: HF {ids[:12]} kit {expected[:12]}, decode {decoded[:60]!r}")
print(
    f"tokenizers {__version__}: {len(cases)} cases, vocab {bpe.get_vocab_size()} / {byt.get_vocab_size()}; "
    f"{failures} id or decoding differences, {pre_token_differences} pre-token differences"
)
sys.exit(1 if failures else 0)
