/**
 * BPE training and encoding speed, and corpus sizes in tokens. Timing lives here, never in tests.
 *
 *   npx tsx --conditions=source scripts/bench-bpe.ts [out.json]
 *
 * Training is measured on the full sotu corpus (all 233 addresses, 10.76 M characters), in two parts:
 * counting pre-tokens (one pass over the text) and learning merges. Each measurement is the median of
 * three runs after one warm-up; results are read back (vocabulary size, token counts) before the clock
 * stops. Prints the machine and writes JSON.
 */
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import {
  ByteTokenizer,
  type BrownDocument,
  type Corpus,
  type Tokenizer,
  countPreTokens,
  encodeDocuments,
  encodeTagged,
  loadBrown,
  loadMobyDick,
  loadSotu,
  splitCorpus,
  trainBpeFromCounts,
} from '../src/index.js';

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

function time<T>(run: () => T, repeats = 3): { ms: number; result: T } {
  run(); // warm-up
  const times: number[] = [];
  let result = run();
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    result = run();
    times.push(performance.now() - start);
  }
  return { ms: median(times), result };
}

const machine = { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version };
console.log(`machine: ${machine.cpu} ×${machine.cores}, ${machine.memoryGiB} GiB, Node ${machine.node}; no tfjs backend involved`);

const sotu = loadSotu();
const texts = sotu.documents.map((d) => d.text);
const characters = texts.reduce((s, t) => s + t.length, 0);
const utf8Bytes = texts.reduce((s, t) => s + Buffer.byteLength(t), 0);

const counting = time(() => countPreTokens(texts));
const counts = counting.result;
console.log(`count pre-tokens: ${counting.ms.toFixed(0)} ms (${counts.size} distinct of ${[...counts.values()].reduce((a, b) => a + b, 0)})`);

const training: Record<string, unknown>[] = [];
const tokenizers: Record<number, Tokenizer> = {};
for (const vocabSize of [2048, 8192]) {
  const merging = time(() => trainBpeFromCounts(counts, { vocabSize }));
  const tokenizer = merging.result;
  tokenizers[vocabSize] = tokenizer;
  if (tokenizer.vocabSize !== vocabSize) throw new Error(`expected vocab ${vocabSize}, got ${tokenizer.vocabSize}`);
  // Encoding: a fresh tokenizer (cold pre-token cache) then the same one again (warm cache).
  const fresh = trainBpeFromCounts(counts, { vocabSize });
  let start = performance.now();
  let tokens = 0;
  for (const text of texts) tokens += fresh.encode(text).length;
  const coldMs = performance.now() - start;
  start = performance.now();
  let warmTokens = 0;
  for (const text of texts) warmTokens += fresh.encode(text).length;
  const warmMs = performance.now() - start;
  if (warmTokens !== tokens) throw new Error('encoding is not deterministic');
  const row = {
    vocabSize,
    countMs: Math.round(counting.ms),
    mergeMs: Math.round(merging.ms),
    trainMs: Math.round(counting.ms + merging.ms),
    tokens,
    charsPerToken: +(characters / tokens).toFixed(2),
    encodeColdMBps: +(utf8Bytes / 1e6 / (coldMs / 1000)).toFixed(1),
    encodeWarmMBps: +(utf8Bytes / 1e6 / (warmMs / 1000)).toFixed(1),
  };
  training.push(row);
  console.log(
    `vocab ${vocabSize}: train ${row.trainMs} ms (count ${row.countMs} + merges ${row.mergeMs}); ${tokens} tokens (${row.charsPerToken} chars/token); encode ${row.encodeColdMBps} MB/s cold cache, ${row.encodeWarmMBps} MB/s warm`,
  );
}

// Corpus sizes in tokens (each BPE trained on that corpus's own training split).
const sizes: Record<string, unknown>[] = [];
const corpora: [string, () => Corpus][] = [
  ['sotu', loadSotu],
  ['moby-dick', loadMobyDick],
  ['brown', loadBrown],
];
for (const [name, load] of corpora) {
  const corpus = load();
  const split = splitCorpus(corpus);
  const row: Record<string, unknown> = {
    corpus: name,
    documents: `${split.train.length} + ${split.validation.length}`,
    characters: corpus.documents.reduce((s, d) => s + d.text.length, 0),
  };
  const choices: [string, Tokenizer][] = [['bytes', new ByteTokenizer()]];
  for (const vocabSize of [2048, 8192]) choices.push([`bpe${vocabSize}`, trainBpeFromCounts(countPreTokens(split.train.map((d) => d.text)), { vocabSize })]);
  for (const [label, tokenizer] of choices) {
    row[`${label}Train`] = encodeDocuments(tokenizer, split.train).length;
    row[`${label}Validation`] = encodeDocuments(tokenizer, split.validation).length;
  }
  sizes.push(row);
  console.log(JSON.stringify(row));
}

// Tagged encoding of the whole Brown corpus (word by word, with the trace to words and tags).
const brown = loadBrown();
const brownBpe = trainBpeFromCounts(countPreTokens(splitCorpus(brown).train.map((d) => d.text)), { vocabSize: 8192 });
const words = brown.documents.flatMap((d: BrownDocument) => d.sentences.flat());
let start = performance.now();
const tagged = encodeTagged(brownBpe, words);
const taggedMs = performance.now() - start;
const wordStarts = tagged.isWordStart.reduce((a, b) => a + b, 0);
const brownTagged = { words: words.length, tokens: tagged.ids.length, wordStarts, ms: Math.round(taggedMs) };
console.log(`brown encodeTagged (BPE 8192): ${words.length} words → ${tagged.ids.length} tokens in ${brownTagged.ms} ms`);

const out = process.argv[2];
if (out !== undefined) {
  writeFileSync(out, `${JSON.stringify({ machine, sotu: { documents: texts.length, characters, utf8Bytes }, training, sizes, brownTagged }, null, 2)}\n`);
  console.log(`wrote ${out}`);
}
