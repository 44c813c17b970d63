/**
 * Interop check with Hugging Face `tokenizers`, step 1 of 2: trains a BPE on the sotu training split,
 * saves it and the byte tokenizer as tokenizer.json, and writes test texts with the kit's encodings.
 *
 *   npx tsx --conditions=source scripts/hf-interop-export.ts /tmp/hf
 *   python scripts/hf_interop_check.py /tmp/hf        # needs `pip install tokenizers`
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SeededRandom } from '@moepp/tensors-core';
import { ByteTokenizer, loadSotu, preTokenize, saveTokenizer, splitCorpus, textToByteLevel, trainBpe } from '../src/index.js';
import { randomText } from '../src/test-helpers.js';

const out = process.argv[2] ?? 'hf-interop';
mkdirSync(out, { recursive: true });
const split = splitCorpus(loadSotu());
const bpe = trainBpe(
  split.train.map((d) => d.text),
  { vocabSize: 4096 },
);
const bytes = new ByteTokenizer();
saveTokenizer(bpe, join(out, 'bpe.tokenizer.json'));
saveTokenizer(bytes, join(out, 'bytes.tokenizer.json'));
const rng = new SeededRandom(77);
const texts = [
  ...split.validation.map((d) => d.text),
  ...Array.from({ length: 1000 }, () => randomText(rng, 1 + rng.int(200))),
  '',
  'a<|endoftext|>b',
  "It's   we'll  \n\n 2021 —x",
  '\uFEFFbom',
  '-'.repeat(3000),
  // Where JavaScript's \s differs from Unicode White_Space (U+0085 NEL, U+FEFF BOM):
  '\u0085.',
  'a\u0085\u0085b',
  '\uFEFF\uFEFF.',
  'x \uFEFF y',
  '\u00a0\u3000\u2028\u2029\u180e.',
];
const cases = texts.map((text) => ({
  text,
  preTokens: preTokenize(text).map(textToByteLevel),
  bpe: Array.from(bpe.encode(text)),
  bytes: Array.from(bytes.encode(text)),
}));
writeFileSync(join(out, 'cases.json'), JSON.stringify(cases));
console.log(`wrote ${cases.length} cases and two tokenizer.json files to ${out}`);
