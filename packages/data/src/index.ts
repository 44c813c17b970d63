/**
 * `@moepp/data`: corpora, byte and byte-level BPE tokenizers, and deterministic batches for training
 * small language models. No tfjs here: batches are `Int32Array`s with a shape; the trainer makes tensors.
 *
 * - Corpora: {@link loadSotu} (default), {@link loadMobyDick}, {@link loadBrown} (part-of-speech tagged),
 *   {@link loadTextFiles}; held-out splits with {@link splitCorpus}.
 * - Tokenizers: {@link ByteTokenizer}, {@link trainBpe} → {@link BpeTokenizer}; Hugging Face
 *   `tokenizer.json` in and out ({@link saveTokenizer}, {@link loadTokenizer}); {@link encodeTagged}
 *   traces tokens to Brown words and tags.
 * - Batches: {@link TrainBatcher} (seeded, resumable) and {@link validationBatches} (fixed).
 * - {@link prepareTextData}: all of the above in one call.
 *
 * Shapes: `B` batch size, `T` sequence length, `L` stream length, `N` tokens.
 *
 * @packageDocumentation
 */
export {
  type Corpus,
  type CorpusDocument,
  type CorpusSplit,
  type HeldOutRule,
  splitCorpus,
  describeSplit,
  stripBom,
} from './corpora/corpus.js';
export {
  type SotuDocument,
  loadSotu,
  sotuDataDirectory,
  SOTU_DEFAULT_HELD_OUT,
  SOTU_CREDITS,
  SOTU_LICENCE,
} from './corpora/sotu.js';
export {
  loadMobyDick,
  mobyDickDataDirectory,
  MOBY_DICK_DEFAULT_HELD_OUT,
  MOBY_DICK_CREDITS,
  MOBY_DICK_LICENCE,
} from './corpora/moby-dick.js';
export {
  type PosClass,
  type TaggedWord,
  type BrownDocument,
  loadBrown,
  brownDataDirectory,
  parseBrownToken,
  parseBrownText,
  baseBrownTag,
  posClassOf,
  detokenizeBrown,
  brownSurfaceForm,
  brownSeparator,
  BROWN_DEFAULT_HELD_OUT,
  BROWN_NOTICE,
  BROWN_CREDITS,
  BROWN_LICENCE,
} from './corpora/brown.js';
export { type TextFilesOptions, loadTextFiles } from './corpora/text-files.js';

export {
  type Tokenizer,
  type TokenizerType,
  type TokenizerJson,
  type AddedTokenJson,
  type BpeModelJson,
  type ByteLevelJson,
  END_OF_TEXT,
} from './tokenizers/tokenizer.js';
export {
  BYTE_TO_UNICODE,
  UNICODE_TO_BYTE,
  gpt2PreTokenizerPattern,
  preTokenize,
  textToByteLevel,
  bytesToByteLevel,
  byteLevelToBytes,
} from './tokenizers/byte-level.js';
export { ByteTokenizer } from './tokenizers/bytes.js';
export { BpeTokenizer, type BpeTokenizerSpec, type SpecialToken } from './tokenizers/bpe.js';
export { trainBpe, trainBpeFromCounts, countPreTokens, type BpeTrainingOptions } from './tokenizers/bpe-trainer.js';
export { tokenizerFromJSON, loadTokenizer, saveTokenizer } from './tokenizers/load.js';
export { encodeTagged, type WordAndTag, type TaggedEncoding } from './tokenizers/tagged.js';

export {
  type BatchCursor,
  type TokenBatch,
  type TrainBatcherConfig,
  type ValidationBatchesConfig,
  TrainBatcher,
  validationBatches,
  countWindows,
} from './batching.js';
export {
  type CorpusChoice,
  type TokenizerChoice,
  type PrepareTextDataOptions,
  type TextData,
  prepareTextData,
  loadCorpus,
  encodeDocuments,
} from './prepare.js';
