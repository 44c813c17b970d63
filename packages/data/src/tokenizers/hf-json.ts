/**
 * The one place that writes Hugging Face's byte-level BPE `tokenizer.json` skeleton (no normaliser,
 * GPT-2 `ByteLevel` pre-tokenizer, post-processor and decoder, a `BPE` model). Both tokenizers of the
 * kit write this form: {@link ByteTokenizer} with the 256 byte tokens and no merges, {@link BpeTokenizer}
 * with its vocabulary, merges and special tokens.
 */
import type { SpecialToken } from './bpe.js';
import type { ByteLevelJson, TokenizerJson } from './tokenizer.js';

/** The `ByteLevel` record the kit writes for the pre-tokenizer. */
export const BYTE_LEVEL_PRE_TOKENIZER: ByteLevelJson = {
  type: 'ByteLevel',
  add_prefix_space: false,
  trim_offsets: true,
  use_regex: true,
};

/** The `ByteLevel` record the kit writes for the decoder (as GPT-2's `tokenizer.json` has it). */
export const BYTE_LEVEL_DECODER: ByteLevelJson = {
  type: 'ByteLevel',
  add_prefix_space: true,
  trim_offsets: true,
  use_regex: true,
};

/** The `ByteLevel` record the kit writes for the post-processor (as GPT-2's `tokenizer.json` has it). */
export const BYTE_LEVEL_POST_PROCESSOR: ByteLevelJson = {
  type: 'ByteLevel',
  add_prefix_space: true,
  trim_offsets: false,
  use_regex: true,
};

/**
 * Builds a byte-level BPE `tokenizer.json` record in Hugging Face `tokenizers` form. Its key order is
 * the order `JSON.stringify` writes, and it is pinned by `hf-json.test.ts`.
 *
 * @param vocab - byte-level token string → id, in the order to write (special tokens included, as HF's
 *   trainer and GPT-2's file have them)
 * @param merges - merges in rank order, each a pair of byte-level token strings; written as
 *   `'left right'`, which every HF version reads
 * @param addedTokens - special tokens, written to `added_tokens` in the given order
 * @returns the record, ready for `JSON.stringify`
 */
export function byteLevelBpeJson(
  vocab: Readonly<Record<string, number>>,
  merges: readonly (readonly [string, string])[],
  addedTokens: readonly SpecialToken[],
): TokenizerJson {
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens.map(({ content, id }) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: BYTE_LEVEL_PRE_TOKENIZER,
    post_processor: BYTE_LEVEL_POST_PROCESSOR,
    decoder: BYTE_LEVEL_DECODER,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      // Byte-level tokens never contain a space (it is 'Ġ'), so 'left right' is unambiguous.
      merges: merges.map(([left, right]) => `${left} ${right}`),
    },
  };
}
