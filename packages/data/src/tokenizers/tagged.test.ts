import { describe, expect, it } from 'vitest';
import { loadMobyDick } from '../corpora/moby-dick.js';
import { detokenizeBrown } from '../corpora/brown.js';
import { ByteTokenizer } from './bytes.js';
import { trainBpe } from './bpe-trainer.js';
import { encodeTagged } from './tagged.js';

const words = [
  { word: 'The', tag: 'at' },
  { word: 'jury', tag: 'nn' },
  { word: 'said', tag: 'vbd' },
  { word: ',', tag: ',' },
  { word: '``', tag: '``' },
  { word: 'no', tag: 'at' },
  { word: "''", tag: "''" },
  { word: '.', tag: '.' },
];

describe('encodeTagged', () => {
  it('traces every byte to its word and tag (hand-checked with the byte tokenizer)', () => {
    const encoding = encodeTagged(new ByteTokenizer(), words);
    expect(encoding.text).toBe('The jury said, "no".');
    expect(encoding.text).toBe(detokenizeBrown(words));
    expect(new ByteTokenizer().decode(encoding.ids)).toBe(encoding.text);
    // 'The' | ' jury' | ' said' | ',' | ' "' | 'no' | '"' | '.'
    expect(Array.from(encoding.wordIndex)).toEqual([0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 4, 4, 5, 5, 6, 7]);
    expect(Array.from(encoding.isWordStart)).toEqual([1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 1, 1]);
    expect(encoding.tags.slice(0, 5)).toEqual(['at', 'at', 'at', 'nn', 'nn']);
  });

  it('with BPE: no token spans two words, and each word has exactly one start token', () => {
    const tokenizer = trainBpe(
      loadMobyDick().documents.slice(0, 30).map((d) => d.text),
      { vocabSize: 1024 },
    );
    const encoding = encodeTagged(tokenizer, words);
    expect(tokenizer.decode(encoding.ids)).toBe(encoding.text);
    const starts = Array.from(encoding.isWordStart).reduce((a, b) => a + b, 0);
    expect(starts).toBe(words.length);
    // The tokens of each word decode to that word's segment of the running text.
    const segments = ['The', ' jury', ' said', ',', ' "', 'no', '"', '.'];
    segments.forEach((segment, w) => {
      const ids = Array.from(encoding.ids).filter((_, i) => encoding.wordIndex[i] === w);
      expect(tokenizer.decode(ids)).toBe(segment);
      const first = Array.from(encoding.wordIndex).indexOf(w);
      expect(encoding.isWordStart[first]).toBe(1);
      expect(encoding.tags[first]).toBe(words[w]?.tag);
    });
    expect(Array.from(encoding.wordIndex)).toEqual([...encoding.wordIndex].sort((a, b) => a - b));
  });
});
