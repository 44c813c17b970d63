/**
 * The byte tokenizer: one token per UTF-8 byte, vocabulary 256, nothing to train.
 */
import { ConfigError } from '@moepp/tensors-core';
import { BYTE_TO_UNICODE } from './byte-level.js';
import { byteLevelBpeJson } from './hf-json.js';
import type { Tokenizer, TokenizerJson } from './tokenizer.js';

const encoder = new TextEncoder();
// ignoreBOM: keep a leading U+FEFF (the default decoder drops it, which would lose text).
const decoder = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * Token id = UTF-8 byte value, so `vocabSize` is 256 and there is no end-of-text token
 * (documents are joined with a blank line instead; see {@link encodeDocuments}).
 *
 * Its `tokenizer.json` is a byte-level BPE with the 256 byte tokens at ids 0–255 and no merges, which
 * Hugging Face `tokenizers` reads and encodes identically; {@link tokenizerFromJSON} reads that form back
 * as a `ByteTokenizer`.
 */
export class ByteTokenizer implements Tokenizer {
  /** Always `'bytes'`. */
  readonly type = 'bytes' as const;
  /** Always 256. */
  readonly vocabSize = 256;
  /** Always `null`: bytes have no special tokens. */
  readonly endOfTextId = null;

  /**
   * @param text - any string
   * @returns int32 [N] the UTF-8 bytes of the text, N = its byte length
   */
  encode(text: string): Int32Array {
    return Int32Array.from(encoder.encode(text));
  }

  /**
   * @param ids - [N] byte values
   * @returns the UTF-8 decoding (invalid sequences become U+FFFD)
   * @throws `ConfigError` on a value outside [0, 256)
   */
  decode(ids: ArrayLike<number>): string {
    const bytes = new Uint8Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as number;
      if (!Number.isInteger(id) || id < 0 || id > 255) {
        throw new ConfigError(`ByteTokenizer.decode: 'ids[${i}]' must be an integer in [0, 256), got ${id}`);
      }
      bytes[i] = id;
    }
    return decoder.decode(bytes);
  }

  /**
   * @param id - a byte value
   * @returns its byte-level character, e.g. `'Ġ'` for 32 (space)
   * @throws `ConfigError` on a value outside [0, 256)
   */
  idToToken(id: number): string {
    const token = Number.isInteger(id) ? BYTE_TO_UNICODE[id] : undefined;
    if (token === undefined) throw new ConfigError(`ByteTokenizer.idToToken: 'id' must be an integer in [0, 256), got ${id}`);
    return token;
  }

  /** @returns a byte-level BPE `tokenizer.json` record with ids 0–255 = bytes and no merges */
  toJSON(): TokenizerJson {
    const vocab: Record<string, number> = {};
    BYTE_TO_UNICODE.forEach((char, byte) => {
      vocab[char] = byte;
    });
    return byteLevelBpeJson(vocab, [], []);
  }
}
