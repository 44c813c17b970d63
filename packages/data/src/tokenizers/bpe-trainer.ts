/**
 * Training a byte-level BPE (GPT-2 scheme) on a corpus, fast enough to run at the start of a training
 * run: the corpus is read once to count pre-token frequencies; merges then work on the distinct
 * pre-tokens ("words") with incremental pair counts and a priority queue, never rescanning the corpus.
 */
import { ConfigError, checkNumber } from '@moepp/tensors-core';
import { BYTE_TO_UNICODE, gpt2PreTokenizerPattern } from './byte-level.js';
import { BpeTokenizer } from './bpe.js';
import { END_OF_TEXT } from './tokenizer.js';

/** Options of {@link trainBpe}. */
export interface BpeTrainingOptions {
  /**
   * Target vocabulary size, all ids included: 256 byte tokens + learned merges + special tokens.
   * The kit uses 512–8192. Training stops earlier (a smaller vocabulary) if no pair occurs at least
   * `minPairFrequency` times.
   */
  readonly vocabSize: number;
  /** Special tokens, given the last ids in this order. Default `['<|endoftext|>']`. */
  readonly specialTokens?: readonly string[];
  /** A pair is merged only if it occurs at least this often (weighted by pre-token counts). Default 2. */
  readonly minPairFrequency?: number;
}

/**
 * Counts GPT-2 pre-tokens (see {@link gpt2PreTokenizerPattern}) over texts: the one pass over the corpus
 * that BPE training needs. Special tokens written literally in the text are cut out (they never take
 * part in merges).
 *
 * @param texts - the training texts, e.g. the documents of a corpus's training split
 * @param specialTokens - literal strings to cut out; default `['<|endoftext|>']`
 * @returns pre-token → number of occurrences, in order of first occurrence
 */
export function countPreTokens(texts: Iterable<string>, specialTokens: readonly string[] = [END_OF_TEXT]): Map<string, number> {
  const counts = new Map<string, number>();
  const pattern = gpt2PreTokenizerPattern();
  const countIn = (text: string): void => {
    pattern.lastIndex = 0;
    for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
      const piece = match[0];
      counts.set(piece, (counts.get(piece) ?? 0) + 1);
    }
  };
  for (const text of texts) {
    const special = specialTokens.find((s) => s.length > 0 && text.includes(s));
    if (special === undefined) countIn(text);
    else for (const part of splitOnAny(text, specialTokens)) countIn(part);
  }
  return counts;
}

function splitOnAny(text: string, separators: readonly string[]): string[] {
  let parts = [text];
  for (const separator of separators) if (separator.length > 0) parts = parts.flatMap((p) => p.split(separator));
  return parts;
}

/**
 * Trains a byte-level BPE tokenizer on texts.
 *
 * Ids: 0–255 are the bytes (id = byte value), 256… the merges in the order learned, then the special
 * tokens. Each step merges the most frequent adjacent pair within pre-tokens; ties go to the pair with
 * the smaller left id, then the smaller right id, so training is deterministic. Occurrences are merged
 * left to right without overlap (`a a a` → `aa a`), as the encoder does. If a merge produces a string
 * that is already a token (possible, rarely, through a different split), the existing id is reused, as
 * Hugging Face's trainer does.
 *
 * @param texts - the training texts (the training split only, so validation text stays unseen)
 * @param options - target vocabulary size, special tokens and minimum pair frequency
 * @returns the trained tokenizer
 * @throws `ConfigError` if `vocabSize` leaves no room for the 256 byte tokens and the special tokens
 */
export function trainBpe(texts: Iterable<string>, options: BpeTrainingOptions): BpeTokenizer {
  const specialTokens = options.specialTokens ?? [END_OF_TEXT];
  checkVocabSize('trainBpe', options.vocabSize, specialTokens.length);
  return trainBpeFromCounts(countPreTokens(texts, specialTokens), options);
}

/**
 * Trains a byte-level BPE tokenizer from pre-token counts (see {@link countPreTokens}); {@link trainBpe}
 * is `trainBpeFromCounts(countPreTokens(texts), options)`.
 *
 * @param counts - pre-token → occurrences
 * @param options - as for {@link trainBpe}
 * @returns the trained tokenizer
 * @throws `ConfigError` on a bad vocabulary size, minimum frequency or special token
 */
export function trainBpeFromCounts(counts: ReadonlyMap<string, number>, options: BpeTrainingOptions): BpeTokenizer {
  const op = 'trainBpe';
  const specialTokens = options.specialTokens ?? [END_OF_TEXT];
  const vocabSize = checkVocabSize(op, options.vocabSize, specialTokens.length);
  const minPairFrequency = checkNumber(op, 'minPairFrequency', options.minPairFrequency ?? 2, { min: 1 });
  specialTokens.forEach((s, i) => {
    if (typeof s !== 'string' || s.length === 0) {
      throw new ConfigError(`${op}: 'specialTokens[${i}]' must be a non-empty string, got ${JSON.stringify(s)}`);
    }
  });
  if (new Set(specialTokens).size !== specialTokens.length) {
    throw new ConfigError(`${op}: 'specialTokens' must not repeat a token, got ${JSON.stringify(specialTokens)}`);
  }
  const modelVocabSize = vocabSize - specialTokens.length; // bytes + merges

  // Distinct pre-tokens ("words") as byte-id sequences, with their counts.
  const encoder = new TextEncoder();
  const words: Int32Array[] = [];
  const frequencies: number[] = [];
  for (const [piece, count] of counts) {
    const bytes = encoder.encode(piece);
    if (bytes.length < 2) continue; // a single byte has no pair to merge
    words.push(Int32Array.from(bytes));
    frequencies.push(count);
  }

  // Token strings (byte-level) by id; ids 0–255 are the bytes.
  const tokenStrings: string[] = [...BYTE_TO_UNICODE];
  const idOf = new Map<string, number>(tokenStrings.map((s, id) => [s, id]));
  const merges: [string, string][] = [];

  // Pair statistics. A pair (left, right) is keyed left · KEY + right (ids < modelVocabSize <= KEY).
  const KEY = modelVocabSize;
  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, number[]>(); // pair → words that contain (or once contained) it
  const addPair = (key: number, count: number): void => {
    const total = (pairCounts.get(key) ?? 0) + count;
    if (total === 0) pairCounts.delete(key);
    else pairCounts.set(key, total);
  };
  const noteWord = (key: number, word: number): void => {
    const list = pairWords.get(key);
    if (list === undefined) pairWords.set(key, [word]);
    else if (list[list.length - 1] !== word) list.push(word);
  };
  words.forEach((symbols, w) => {
    const frequency = frequencies[w] as number;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const key = (symbols[i] as number) * KEY + (symbols[i + 1] as number);
      addPair(key, frequency);
      noteWord(key, w);
    }
  });
  const queue = new PairQueue();
  for (const [key, count] of pairCounts) queue.push(count, key);

  const lastVisit = new Int32Array(words.length).fill(-1);
  let nextId = 256;
  for (let step = 0; nextId < modelVocabSize; step++) {
    // The best pair: the queue holds, for every live pair, an entry whose count is at least the live
    // count (counts only fall, except for pairs made by the newest merge, which are pushed afresh).
    let bestKey = -1;
    let bestCount = 0;
    while (queue.size > 0) {
      const count = queue.topCount();
      const key = queue.topKey();
      queue.pop();
      const live = pairCounts.get(key) ?? 0;
      if (live === count) {
        bestKey = key;
        bestCount = count;
        break;
      }
      if (live > 0) queue.push(live, key);
    }
    if (bestKey < 0 || bestCount < minPairFrequency) break;

    const left = Math.floor(bestKey / KEY);
    const right = bestKey - left * KEY;
    const leftString = tokenStrings[left] as string;
    const rightString = tokenStrings[right] as string;
    const merged = leftString + rightString;
    let mergedId = idOf.get(merged);
    if (mergedId === undefined) {
      mergedId = nextId++;
      tokenStrings.push(merged);
      idOf.set(merged, mergedId);
    }
    merges.push([leftString, rightString]);

    // Rewrite the words that hold the pair, updating pair counts by the difference.
    const touched = new Set<number>(); // pairs containing mergedId whose counts rose
    for (const w of pairWords.get(bestKey) ?? []) {
      if (lastVisit[w] === step) continue;
      lastVisit[w] = step;
      const symbols = words[w] as Int32Array;
      const rewritten = mergePair(symbols, left, right, mergedId);
      if (rewritten === symbols) continue; // the word no longer holds the pair
      const frequency = frequencies[w] as number;
      for (let i = 0; i + 1 < symbols.length; i++) addPair((symbols[i] as number) * KEY + (symbols[i + 1] as number), -frequency);
      for (let i = 0; i + 1 < rewritten.length; i++) {
        const a = rewritten[i] as number;
        const b = rewritten[i + 1] as number;
        const key = a * KEY + b;
        addPair(key, frequency);
        if (a === mergedId || b === mergedId) {
          noteWord(key, w);
          touched.add(key);
        }
      }
      words[w] = rewritten;
    }
    pairWords.delete(bestKey);
    for (const key of touched) {
      const count = pairCounts.get(key);
      if (count !== undefined) queue.push(count, key);
    }
  }

  const vocab = new Map(idOf);
  const firstSpecialId = tokenStrings.length;
  return new BpeTokenizer({
    vocab,
    merges,
    specialTokens: specialTokens.map((content, i) => ({ content, id: firstSpecialId + i })),
  });
}

function checkVocabSize(op: string, vocabSize: unknown, specials: number): number {
  const minimum = 256 + specials + 1;
  if (typeof vocabSize !== 'number' || !Number.isInteger(vocabSize) || vocabSize < minimum) {
    throw new ConfigError(
      `${op}: 'vocabSize' must be an integer >= ${minimum} (256 byte tokens + ${specials} special token${specials === 1 ? '' : 's'} + at least one merge), got ${String(vocabSize)}`,
    );
  }
  return vocabSize;
}

/** Merges every non-overlapping (left, right) left to right; returns the input itself if there is none. */
function mergePair(symbols: Int32Array, left: number, right: number, merged: number): Int32Array {
  let out: Int32Array | null = null;
  let write = 0;
  for (let read = 0; read < symbols.length; ) {
    if (read + 1 < symbols.length && symbols[read] === left && symbols[read + 1] === right) {
      if (out === null) {
        out = new Int32Array(symbols.length - 1);
        out.set(symbols.subarray(0, read));
        write = read;
      }
      out[write++] = merged;
      read += 2;
    } else {
      if (out !== null) out[write++] = symbols[read] as number;
      read++;
    }
  }
  return out === null ? symbols : out.slice(0, write);
}

/** A max-priority queue of (count, pair key): highest count first, then smallest key. */
class PairQueue {
  private readonly counts: number[] = [];
  private readonly keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }

  topCount(): number {
    return this.counts[0] as number;
  }

  topKey(): number {
    return this.keys[0] as number;
  }

  push(count: number, key: number): void {
    const counts = this.counts;
    const keys = this.keys;
    let i = counts.length;
    counts.push(count);
    keys.push(key);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(count, key, counts[parent] as number, keys[parent] as number)) break;
      counts[i] = counts[parent] as number;
      keys[i] = keys[parent] as number;
      i = parent;
    }
    counts[i] = count;
    keys[i] = key;
  }

  pop(): void {
    const counts = this.counts;
    const keys = this.keys;
    const lastCount = counts.pop() as number;
    const lastKey = keys.pop() as number;
    const n = counts.length;
    if (n === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child =
        right < n && before(counts[right] as number, keys[right] as number, counts[left] as number, keys[left] as number)
          ? right
          : left;
      if (!before(counts[child] as number, keys[child] as number, lastCount, lastKey)) break;
      counts[i] = counts[child] as number;
      keys[i] = keys[child] as number;
      i = child;
    }
    counts[i] = lastCount;
    keys[i] = lastKey;
  }
}

/** Whether (countA, keyA) comes out of the queue before (countB, keyB). */
function before(countA: number, keyA: number, countB: number, keyB: number): boolean {
  return countA > countB || (countA === countB && keyA < keyB);
}
