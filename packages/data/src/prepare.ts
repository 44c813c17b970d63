/**
 * One call from a corpus name to batches: load, split, tokenize, batch.
 */
import { existsSync } from 'node:fs';
import { ConfigError, checkNumber, checkOneOf, describe } from '@moepp/tensors-core';
import { TrainBatcher, validationBatches, type BatchCursor, type TokenBatch } from './batching.js';
import { loadBrown } from './corpora/brown.js';
import { splitCorpus, type Corpus, type CorpusDocument, type CorpusSplit, type HeldOutRule } from './corpora/corpus.js';
import { loadMobyDick } from './corpora/moby-dick.js';
import { loadSotu } from './corpora/sotu.js';
import { loadTextFiles } from './corpora/text-files.js';
import { trainBpe } from './tokenizers/bpe-trainer.js';
import { ByteTokenizer } from './tokenizers/bytes.js';
import { loadTokenizer, saveTokenizer } from './tokenizers/load.js';
import { END_OF_TEXT, type Tokenizer } from './tokenizers/tokenizer.js';

/** A built-in corpus by name, a text file or folder, or a corpus already loaded. */
export type CorpusChoice =
  | 'sotu'
  | 'moby-dick'
  | 'brown'
  | {
      /** A `.txt` file or a folder of them (see {@link loadTextFiles}). */
      readonly path: string;
    }
  | Corpus;

/**
 * `'bytes'` (vocabulary 256), a byte-level BPE to train with a target vocabulary size (special tokens
 * default to `['<|endoftext|>']`), or a tokenizer already built.
 */
export type TokenizerChoice =
  | 'bytes'
  | {
      /** Target vocabulary size: 256 bytes + merges + special tokens (see {@link trainBpe}). */
      readonly bpe: number;
      /** Special tokens. Default `['<|endoftext|>']`. */
      readonly specialTokens?: readonly string[];
    }
  | Tokenizer;

/** Options of {@link prepareTextData}. */
export interface PrepareTextDataOptions {
  /** The corpus. Default `'sotu'`. */
  readonly corpus?: CorpusChoice;
  /** The tokenizer. Default `'bytes'`. */
  readonly tokenizer?: TokenizerChoice;
  /** T, tokens per input row; windows hold T + 1 tokens. */
  readonly seqLen: number;
  /** B, windows per batch (training and validation). */
  readonly batchSize: number;
  /** Seed of the training shuffles. */
  readonly seed: number;
  /** M, the number of validation windows: the first M of the held-out stream. */
  readonly validationWindows: number;
  /** The held-out rule. Default the corpus's own (`sotu`: 2012–2021; `moby-dick`, `brown`: every 20th document). */
  readonly heldOut?: HeldOutRule;
  /**
   * For `{ bpe }` tokenizers: a `tokenizer.json` path. If the file exists it is loaded instead of
   * training (it must be a BPE with the requested vocabulary size); otherwise the trained tokenizer is
   * saved there. The file is keyed only by its path: use one path per corpus, held-out rule and size.
   * Default: no cache.
   */
  readonly tokenizerCache?: string;
  /** Where the training batcher resumes (from `train.getCursor()` of an earlier run). Default: the start. */
  readonly cursor?: BatchCursor;
}

/** Everything a training run needs from the data side. */
export interface TextData {
  /** The corpus as loaded. */
  readonly corpus: Corpus;
  /** Its training / held-out split. */
  readonly split: CorpusSplit;
  /** The tokenizer (trained on `split.train` only, for BPE). */
  readonly tokenizer: Tokenizer;
  /** Where the tokenizer came from. */
  readonly tokenizerOrigin: 'bytes' | 'trained' | 'cache' | 'given';
  /** int32 [L_train] the training documents, encoded (see {@link encodeDocuments}). */
  readonly trainTokens: Int32Array;
  /** int32 [L_validation] the held-out documents, encoded. */
  readonly validationTokens: Int32Array;
  /** Training batches (seeded shuffles, resumable). */
  readonly train: TrainBatcher;
  /** The fixed validation set: ⌈M / B⌉ batches of the first M held-out windows. */
  readonly validation: readonly TokenBatch[];
}

/**
 * Loads a corpus by name or path.
 *
 * @param choice - `'sotu'`, `'moby-dick'`, `'brown'`, `{ path }` or a loaded corpus (returned as is)
 * @returns the corpus
 * @throws `ConfigError` on an unknown name or a missing / empty path
 */
export function loadCorpus(choice: CorpusChoice): Corpus {
  if (typeof choice === 'object' && choice !== null) {
    if ('documents' in choice) return choice;
    if (typeof choice.path === 'string') return loadTextFiles(choice.path);
  }
  const name = checkOneOf('loadCorpus', 'corpus', choice, ['sotu', 'moby-dick', 'brown']);
  return name === 'sotu' ? loadSotu() : name === 'moby-dick' ? loadMobyDick() : loadBrown();
}

/**
 * Encodes documents into one token stream. With an end-of-text token (BPE's `<|endoftext|>`), each
 * document is encoded on its own and followed by that token (as GPT-2's training data is); without one
 * (bytes), the documents are joined with a blank line (`'\n\n'`) and encoded as one text.
 *
 * @param tokenizer - the tokenizer
 * @param documents - the documents, in order
 * @returns int32 [L] the stream
 */
export function encodeDocuments(tokenizer: Tokenizer, documents: readonly CorpusDocument[]): Int32Array {
  const endOfText = tokenizer.endOfTextId;
  if (endOfText === null) return tokenizer.encode(documents.map((d) => d.text).join('\n\n'));
  const pieces = documents.map((d) => tokenizer.encode(d.text));
  const stream = new Int32Array(pieces.reduce((sum, p) => sum + p.length + 1, 0));
  let offset = 0;
  for (const piece of pieces) {
    stream.set(piece, offset);
    offset += piece.length;
    stream[offset++] = endOfText;
  }
  return stream;
}

/**
 * Loads a corpus, splits off the held-out documents, builds the tokenizer (training a BPE on the
 * training documents only, or reading it from `tokenizerCache`), encodes both parts and makes the
 * training batcher and the fixed validation set.
 *
 * @example
 * ```ts
 * const data = prepareTextData({ corpus: 'sotu', tokenizer: { bpe: 2048 }, seqLen: 128, batchSize: 16, seed: 1, validationWindows: 64 });
 * const batch = data.train.next(); // batch.inputs, batch.targets: int32 [16, 128]
 * ```
 *
 * @param options - corpus, tokenizer, T, B, seed, M and the optional held-out rule, cache and cursor
 * @returns the tokenizer, both token streams, the training batcher and the validation batches
 * @throws `ConfigError` on a bad option, a missing path, a cached tokenizer that does not match,
 *   or streams too short for the requested windows
 */
export function prepareTextData(options: PrepareTextDataOptions): TextData {
  const op = 'prepareTextData';
  const seqLen = checkNumber(op, 'seqLen', options?.seqLen, { integer: true, min: 1 });
  const batchSize = checkNumber(op, 'batchSize', options.batchSize, { integer: true, min: 1 });
  const validationWindows = checkNumber(op, 'validationWindows', options.validationWindows, { integer: true, min: 1 });
  checkNumber(op, 'seed', options.seed, { integer: true, min: 0, max: 2 ** 32 - 1 });
  const tokenizerChoice = options.tokenizer ?? 'bytes';
  if (typeof tokenizerChoice === 'object' && tokenizerChoice !== null && 'bpe' in tokenizerChoice) {
    checkNumber(op, 'tokenizer.bpe', tokenizerChoice.bpe, { integer: true, min: 256 + (tokenizerChoice.specialTokens ?? [END_OF_TEXT]).length + 1 });
  }

  const corpus = loadCorpus(options.corpus ?? 'sotu');
  const split = splitCorpus(corpus, options.heldOut ?? corpus.heldOut);
  const { tokenizer, origin } = buildTokenizer(tokenizerChoice, split, options.tokenizerCache);
  const trainTokens = encodeDocuments(tokenizer, split.train);
  const validationTokens = encodeDocuments(tokenizer, split.validation);
  const train = new TrainBatcher(trainTokens, {
    batchSize,
    seqLen,
    seed: options.seed,
    ...(options.cursor !== undefined ? { cursor: options.cursor } : {}),
  });
  const validation = validationBatches(validationTokens, { batchSize, seqLen, windows: validationWindows });
  return { corpus, split, tokenizer, tokenizerOrigin: origin, trainTokens, validationTokens, train, validation };
}

function buildTokenizer(
  choice: TokenizerChoice,
  split: CorpusSplit,
  cachePath: string | undefined,
): { tokenizer: Tokenizer; origin: TextData['tokenizerOrigin'] } {
  const op = 'prepareTextData';
  if (choice === 'bytes') return { tokenizer: new ByteTokenizer(), origin: 'bytes' };
  if (typeof choice === 'object' && choice !== null) {
    if ('bpe' in choice) {
      const vocabSize = choice.bpe;
      if (cachePath !== undefined && existsSync(cachePath)) {
        const cached = loadTokenizer(cachePath);
        if (cached.type !== 'bpe' || cached.vocabSize !== vocabSize) {
          throw new ConfigError(
            `${op}: cached tokenizer '${cachePath}' is ${cached.type} with vocabSize ${cached.vocabSize}, but { bpe: ${vocabSize} } was requested; delete the file or use another 'tokenizerCache' path`,
          );
        }
        return { tokenizer: cached, origin: 'cache' };
      }
      const trained = trainBpe(
        split.train.map((d) => d.text),
        { vocabSize, ...(choice.specialTokens !== undefined ? { specialTokens: choice.specialTokens } : {}) },
      );
      if (cachePath !== undefined) saveTokenizer(trained, cachePath);
      return { tokenizer: trained, origin: 'trained' };
    }
    if (typeof (choice as Tokenizer).encode === 'function') return { tokenizer: choice as Tokenizer, origin: 'given' };
  }
  throw new ConfigError(`${op}: 'tokenizer' must be 'bytes', { bpe: vocabSize } or a Tokenizer, got ${describe(choice)}`);
}
