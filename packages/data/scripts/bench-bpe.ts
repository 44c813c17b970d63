/**
 * BPE training and encoding speed, and corpus sizes in tokens. Timing lives here, never in tests.
 *
 *   npx tsx --conditions=source scripts/bench-bpe.ts [out.json]
 *
 * Training is measured on the full sotu corpus (all 233 addresses, 10.76 M characters), in two parts:
 * counting pre-tokens (one pass over the text) and learning merges. Each measurement is the median of
 * five runs after one warm-up (and the best, less disturbed by other jobs on a shared machine); results are read back (vocabulary size, token counts) before the clock
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
  tokenizerFromJSON,
  trainBpeFromCounts,
} from '../src/index.js';

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;

/** Median and best of `repeats` timed runs after one warm-up (the best is the least disturbed by other jobs). */
function time<T>(run: () => T, repeats = 5): { ms: number; bestMs: number; result: T } {
  let result = run(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    result = run();
    times.push(performance.now() - start);
  }
  return { ms: median(times), bestMs: Math.min(...times), result };
}

const machine = { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version };
console.log(`machine: ${machine.cpu} ×${machine.cores}, ${machine.memoryGiB} GiB, Node ${machine.node}; no tfjs backend involved`);

const sotu = loadSotu();
const texts = sotu.documents.map((d) => d.text);
const characters = texts.reduce((s, t) => s + t.length, 0);
const utf8Bytes = texts.reduce((s, t) => s + Buffer.byteLength(t), 0);

const counting = time(() => countPreTokens(texts));
const counts = counting.result;
console.log(
  `count pre-tokens: ${counting.ms.toFixed(0)} ms median, ${counting.bestMs.toFixed(0)} ms best (${counts.size} distinct of ${[...counts.values()].reduce((a, b) => a + b, 0)})`,
);

const training: Record<string, unknown>[] = [];
const tokenizers: Record<number, Tokenizer> = {};
for (const vocabSize of [2048, 8192]) {
  const merging = time(() => trainBpeFromCounts(counts, { vocabSize }));
  const tokenizer = merging.result;
  tokenizers[vocabSize] = tokenizer;
  if (tokenizer.vocabSize !== vocabSize) throw new Error(`expected vocab ${vocabSize}, got ${tokenizer.vocabSize}`);
  // Encoding: fresh tokenizers (cold pre-token cache), then one of them again (warm cache).
  const encodeAll = (tokenizer: Tokenizer): number => texts.reduce((sum, text) => sum + tokenizer.encode(text).length, 0);
  const json = tokenizer.toJSON();
  const coldTimes: number[] = [];
  let tokens = 0;
  for (let i = 0; i < 3; i++) {
    const fresh = tokenizerFromJSON(json); // an empty cache, built outside the clock
    const start = performance.now();
    tokens = encodeAll(fresh);
    coldTimes.push(performance.now() - start);
  }
  const warm = time(() => encodeAll(tokenizer), 3);
  if (warm.result !== tokens) throw new Error('encoding is not deterministic');
  const coldMs = Math.min(...coldTimes);
  const warmMs = warm.bestMs;
  const row = {
    vocabSize,
    countMs: Math.round(counting.ms),
    mergeMs: Math.round(merging.ms),
    trainMs: Math.round(counting.ms + merging.ms),
    bestTrainMs: Math.round(counting.bestMs + merging.bestMs),
    tokens,
    charsPerToken: +(characters / tokens).toFixed(2),
    encodeColdMBps: +(utf8Bytes / 1e6 / (coldMs / 1000)).toFixed(1),
    encodeWarmMBps: +(utf8Bytes / 1e6 / (warmMs / 1000)).toFixed(1),
  };
  training.push(row);
  console.log(
    `vocab ${vocabSize}: train ${row.trainMs} ms median (count ${row.countMs} + merges ${row.mergeMs}), ${row.bestTrainMs} ms best; ${tokens} tokens (${row.charsPerToken} chars/token); encode ${row.encodeColdMBps} MB/s cold cache, ${row.encodeWarmMBps} MB/s warm (best runs)`,
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
const start = performance.now();
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
