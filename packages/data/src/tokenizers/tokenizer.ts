/**
 * The common tokenizer interface and the subset of Hugging Face's `tokenizer.json` format the kit
 * reads and writes.
 */

/** Which tokenizer implementation a {@link Tokenizer} is. */
export type TokenizerType = 'bytes' | 'bpe';

/**
 * A tokenizer: text → token ids → text. Every tokenizer of the kit is lossless on valid UTF-8 text:
 * `decode(encode(text)) === text` for every string without lone surrogates (which UTF-8 cannot hold;
 * `TextEncoder` turns them into U+FFFD).
 */
export interface Tokenizer {
  /** `'bytes'` for {@link ByteTokenizer}, `'bpe'` for {@link BpeTokenizer}. */
  readonly type: TokenizerType;
  /** Number of ids: every id is in `[0, vocabSize)`; the model's embedding has this many rows. */
  readonly vocabSize: number;
  /** The id of `<|endoftext|>` (the document separator), or `null` if the tokenizer has none. */
  readonly endOfTextId: number | null;
  /**
   * @param text - any string
   * @returns int32 [N] token ids
   */
  encode(text: string): Int32Array;
  /**
   * @param ids - [N] token ids
   * @returns the text; byte sequences that are not valid UTF-8 (e.g. a slice that cuts a character)
   *   decode to U+FFFD
   * @throws `ConfigError` on an id outside `[0, vocabSize)`
   */
  decode(ids: ArrayLike<number>): string;
  /**
   * @param id - a token id
   * @returns the token as it appears in `tokenizer.json` (byte-level characters, e.g. `'Ġthe'`), or the
   *   content of a special token
   * @throws `ConfigError` on an id outside `[0, vocabSize)`
   */
  idToToken(id: number): string;
  /** @returns the tokenizer in Hugging Face `tokenizer.json` form, ready for `JSON.stringify` */
  toJSON(): TokenizerJson;
}

/** One entry of `added_tokens` in `tokenizer.json` (special tokens such as `<|endoftext|>`). */
export interface AddedTokenJson {
  /** The token's id. */
  readonly id: number;
  /** The literal text the token stands for. */
  readonly content: string;
  /** HF: only match as a whole word. Always `false` here. */
  readonly single_word: boolean;
  /** HF: strip whitespace on the left. Always `false` here. */
  readonly lstrip: boolean;
  /** HF: strip whitespace on the right. Always `false` here. */
  readonly rstrip: boolean;
  /** HF: match on normalised text. Always `false` here. */
  readonly normalized: boolean;
  /** HF: a special token (skipped by `decode(..., skip_special_tokens=True)`). */
  readonly special: boolean;
}

/** HF's `ByteLevel` pre-tokenizer / decoder / post-processor record. */
export interface ByteLevelJson {
  /** Always `'ByteLevel'`. */
  readonly type: 'ByteLevel';
  /** Add a space before the first word. `false` in the pre-tokenizer: text is encoded as given. */
  readonly add_prefix_space: boolean;
  /** Offsets bookkeeping; irrelevant to ids. */
  readonly trim_offsets: boolean;
  /** Split with the GPT-2 regex before the BPE model (see {@link gpt2PreTokenizerPattern}). */
  readonly use_regex: boolean;
}

/** HF's `BPE` model record. */
export interface BpeModelJson {
  /** Always `'BPE'`. */
  readonly type: 'BPE';
  /** BPE dropout; always `null` (deterministic). */
  readonly dropout: null;
  /** No unknown token: byte-level BPE can encode anything. */
  readonly unk_token: null;
  /** Unused by byte-level BPE. */
  readonly continuing_subword_prefix: null;
  /** Unused by byte-level BPE. */
  readonly end_of_word_suffix: null;
  /** Unused (no unknown token). */
  readonly fuse_unk: boolean;
  /** Unused (byte-level BPE has every byte in its vocabulary). */
  readonly byte_fallback: boolean;
  /** HF: look words up in the vocabulary before merging. `false`: always merge (GPT-2 behaviour). */
  readonly ignore_merges: boolean;
  /** Byte-level token string → id. */
  readonly vocab: Readonly<Record<string, number>>;
  /** Merges in rank order, `'left right'` (every HF version reads this) or `['left', 'right']`. */
  readonly merges: readonly (string | readonly [string, string])[];
}

/** The `tokenizer.json` record the kit writes: byte-level BPE in Hugging Face `tokenizers` form. */
export interface TokenizerJson {
  /** Format version, `'1.0'`. */
  readonly version: string;
  /** No truncation. */
  readonly truncation: null;
  /** No padding. */
  readonly padding: null;
  /** Special tokens, matched in the text before pre-tokenisation. */
  readonly added_tokens: readonly AddedTokenJson[];
  /** No normaliser: text is encoded as given. */
  readonly normalizer: null;
  /** GPT-2 byte-level pre-tokenisation. */
  readonly pre_tokenizer: ByteLevelJson;
  /** GPT-2 style byte-level post-processor (changes offsets only, never ids). */
  readonly post_processor: ByteLevelJson | null;
  /** Byte-level decoder: characters back to bytes, bytes to UTF-8 text. */
  readonly decoder: ByteLevelJson;
  /** The BPE model. */
  readonly model: BpeModelJson;
}

/** The default document separator, GPT-2's special token. */
export const END_OF_TEXT = '<|endoftext|>';
