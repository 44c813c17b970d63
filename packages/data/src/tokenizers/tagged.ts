/**
 * Encoding tagged words (the Brown corpus) so that every token can be traced to its word and tag.
 */
import { brownSeparator, brownSurfaceForm } from '../corpora/brown.js';
import type { Tokenizer } from './tokenizer.js';

/** A word and its tag: the input of {@link encodeTagged} (a Brown `TaggedWord` fits). */
export interface WordAndTag {
  /** The word as written in the corpus. */
  readonly word: string;
  /** Its tag (base or raw, as you like), carried through to every token of the word. */
  readonly tag: string;
}

/** Token ids with, per token, the word it came from. All arrays have one entry per token. */
export interface TaggedEncoding {
  /** int32 [N] token ids; `tokenizer.decode(ids) === text`. */
  readonly ids: Int32Array;
  /** int32 [N] index into the input words of the word each token belongs to (non-decreasing). */
  readonly wordIndex: Int32Array;
  /**
   * uint8 [N] 1 on the first token of each word (it carries the word's tag for analyses that count each
   * word once), 0 on the later pieces (word fragments).
   */
  readonly isWordStart: Uint8Array;
  /** [N] the tag of the word each token belongs to (the same string on every piece of a word). */
  readonly tags: readonly string[];
  /** The running text the ids decode to: the words through the Brown `detokenizeBrown` rule. */
  readonly text: string;
}

/**
 * Encodes tagged words as running text (the Brown `detokenizeBrown` rule) and traces each token to its
 * word. Each word is encoded together with the space written before it (`' jury'`), separately from its
 * neighbours, so no token spans two words; the leading space belongs to the word after it, as GPT-2's
 * pre-tokeniser has it. The ids decode exactly to `text`; they can differ from `tokenizer.encode(text)`
 * only where the pre-tokeniser would join two adjacent words' punctuation into one piece (`."`).
 *
 * @param tokenizer - any tokenizer of the kit
 * @param words - the words, in order, e.g. `brownDocument.sentences.flat()`
 * @returns ids and per-token word index, word-start flag and tag
 */
export function encodeTagged(tokenizer: Tokenizer, words: readonly WordAndTag[]): TaggedEncoding {
  const pieces: Int32Array[] = [];
  let total = 0;
  let text = '';
  let previous: string | null = null;
  const segmentIds = new Map<string, Int32Array>(); // ' jury' → its ids; words repeat a lot
  for (const { word } of words) {
    const segment = brownSeparator(previous, word) + brownSurfaceForm(word);
    let ids = segmentIds.get(segment);
    if (ids === undefined) {
      ids = tokenizer.encode(segment);
      segmentIds.set(segment, ids);
    }
    pieces.push(ids);
    total += ids.length;
    text += segment;
    previous = word;
  }
  const ids = new Int32Array(total);
  const wordIndex = new Int32Array(total);
  const isWordStart = new Uint8Array(total);
  const tags = new Array<string>(total);
  let offset = 0;
  pieces.forEach((wordIds, w) => {
    ids.set(wordIds, offset);
    wordIndex.fill(w, offset, offset + wordIds.length);
    if (wordIds.length > 0) isWordStart[offset] = 1;
    tags.fill((words[w] as WordAndTag).tag, offset, offset + wordIds.length);
    offset += wordIds.length;
  });
  return { ids, wordIndex, isWordStart, tags, text };
}
