"""Interop check with Hugging Face `tokenizers`, step 2 of 2 (see hf-interop-export.ts).

Loads the kit's tokenizer.json files with `tokenizers.Tokenizer.from_file` and compares encodings and
decodings with the kit's on every case. Exits non-zero on any difference.
"""
import json
import sys

from tokenizers import Tokenizer, __version__

folder = sys.argv[1] if len(sys.argv) > 1 else "hf-interop"
bpe = Tokenizer.from_file(f"{folder}/bpe.tokenizer.json")
byt = Tokenizer.from_file(f"{folder}/bytes.tokenizer.json")
cases = json.load(open(f"{folder}/cases.json", encoding="utf-8"))
failures = 0
for case in cases:
    text = case["text"]
    for name, tok, expected in (("bpe", bpe, case["bpe"]), ("bytes", byt, case["bytes"])):
        ids = tok.encode(text).ids
        decoded = tok.decode(expected, skip_special_tokens=False)
        if ids != expected or decoded != text:
            failures += 1
            if failures <= 5:
                print(f"{name} differs on {text[:60]!r}: HF {ids[:12]} kit {expected[:12]}, decode {decoded[:60]!r}")
print(f"tokenizers {__version__}: {len(cases)} cases, vocab {bpe.get_vocab_size()} / {byt.get_vocab_size()}, {failures} differences")
sys.exit(1 if failures else 0)
