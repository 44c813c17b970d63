import { describe, expect, it } from 'vitest';
import { ConfigError, SeededRandom } from '@moepp/tensors-core';
import { loadMobyDick } from '../corpora/moby-dick.js';
import { countPreTokens, trainBpe, trainBpeFromCounts } from './bpe-trainer.js';
import { BYTE_TO_UNICODE, textToByteLevel } from './byte-level.js';

/** The textbook example (Wikipedia, "Byte pair encoding"): aa → Z, ab → Y, ZY → X. */
describe('trainBpe on "aaabdaaabac"', () => {
  it('learns aa, ab, then aaab; ties go to the smaller (left, right) ids', () => {
    // Pairs: aa ×4, ab ×2, … → merge a a (256). Then (aa, a) ×2 ties with (a, b) ×2: ids (97, 98)
    // < (256, 97), so a b (257). Then (aa, ab) ×2 → 258. All pairs left occur once, below the default
    // minimum of 2, so training stops with 3 merges.
    const tokenizer = trainBpe(['aaabdaaabac'], { vocabSize: 300 });
    expect(tokenizer.merges).toEqual([
      ['a', 'a'],
      ['a', 'b'],
      ['aa', 'ab'],
    ]);
    expect(tokenizer.vocabSize).toBe(256 + 3 + 1); // bytes, merges, <|endoftext|>
    expect(tokenizer.endOfTextId).toBe(259);
    expect(Array.from(tokenizer.encode('aaabdaaabac'))).toEqual([258, 100, 258, 97, 99]); // aaab d aaab a c
    expect(tokenizer.idToToken(258)).toBe('aaab');
  });

  it('with minPairFrequency 1, merges the once-seen pair with the smallest ids next: a c', () => {
    const tokenizer = trainBpe(['aaabdaaabac'], { vocabSize: 256 + 4 + 1, minPairFrequency: 1 });
    expect(tokenizer.merges.at(-1)).toEqual(['a', 'c']);
    expect(Array.from(tokenizer.encode('aaabdaaabac'))).toEqual([258, 100, 258, 259]);
  });

  it('stops at the requested vocabulary size, special tokens included', () => {
    const tokenizer = trainBpe(['aaabdaaabac'], { vocabSize: 258, specialTokens: ['<|endoftext|>'] });
    expect(tokenizer.merges).toEqual([['a', 'a']]);
    expect(tokenizer.vocabSize).toBe(258);
    const noSpecials = trainBpe(['aaabdaaabac'], { vocabSize: 258, specialTokens: [] });
    expect(noSpecials.merges).toHaveLength(2);
    expect(noSpecials.endOfTextId).toBeNull();
  });
});

describe('trainBpe determinism', () => {
  it('breaks count ties by ids, not by the order words were seen', () => {
    // "ab" and "cd" both occur twice: (a, b) = (97, 98) goes before (c, d) = (99, 100) either way.
    expect(trainBpe(['ab ab', 'cd cd'], { vocabSize: 300, specialTokens: [] }).merges.slice(0, 2)).toEqual([
      ['a', 'b'],
      ['c', 'd'],
    ]);
    expect(trainBpe(['cd cd', 'ab ab'], { vocabSize: 300, specialTokens: [] }).merges.slice(0, 2)).toEqual([
      ['a', 'b'],
      ['c', 'd'],
    ]);
  });

  it('learns the same merges twice, and for the same documents in another order', () => {
    const texts = loadMobyDick().documents.map((d) => d.text).slice(0, 40);
    const first = trainBpe(texts, { vocabSize: 1024 });
    const second = trainBpe(texts, { vocabSize: 1024 });
    const shuffled = trainBpe(new SeededRandom(5).shuffle([...texts]), { vocabSize: 1024 });
    expect(first.merges).toHaveLength(1024 - 256 - 1);
    expect(second.merges).toEqual(first.merges);
    expect(shuffled.merges).toEqual(first.merges);
    expect(first.merges.slice(0, 3)).toEqual([
      ['Ġ', 't'],
      ['h', 'e'],
      ['Ġ', 'a'],
    ]);
  });

  it('equals a naive trainer that recounts every pair before each merge', () => {
    const text = loadMobyDick().documents[5]?.text.slice(0, 20_000) ?? '';
    const counts = countPreTokens([text]);
    const fast = trainBpeFromCounts(counts, { vocabSize: 256 + 120, specialTokens: [] });
    expect(fast.merges).toEqual(naiveMerges(counts, 120));
  });
});

describe('countPreTokens', () => {
  it('counts GPT-2 pre-tokens and cuts special tokens out', () => {
    const counts = countPreTokens(['the cat<|endoftext|>the dog', ' the end']);
    expect(Object.fromEntries(counts)).toEqual({ the: 2, ' cat': 1, ' dog': 1, ' the': 1, ' end': 1 });
  });
});

describe('trainBpe argument checks', () => {
  it('rejects a vocabulary without room for the 256 bytes, the specials and a merge', () => {
    expect(() => trainBpe(['x'], { vocabSize: 100 })).toThrow(ConfigError);
    expect(() => trainBpe(['x'], { vocabSize: 100 })).toThrow(/'vocabSize' must be an integer >= 258 \(256 byte tokens \+ 1 special token \+ at least one merge\), got 100/);
    expect(() => trainBpe(['x'], { vocabSize: 512.5 })).toThrow(/'vocabSize'/);
    expect(() => trainBpe(['x'], { vocabSize: 512, minPairFrequency: 0 })).toThrow(/'minPairFrequency' must be a finite number >= 1, got 0/);
    expect(() => trainBpe(['x'], { vocabSize: 512, specialTokens: ['<a>', '<a>'] })).toThrow(/must not repeat/);
  });
});

/** Reference BPE: recount all pairs over the distinct words before each merge. */
function naiveMerges(counts: ReadonlyMap<string, number>, merges: number): [string, string][] {
  const idOf = new Map<string, number>(BYTE_TO_UNICODE.map((char, byte) => [char, byte]));
  let words = [...counts].map(([piece, count]) => ({ symbols: [...textToByteLevel(piece)], count }));
  const out: [string, string][] = [];
  for (let m = 0; m < merges; m++) {
    const pairs = new Map<string, { left: string; right: string; count: number }>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const left = symbols[i] as string;
        const right = symbols[i + 1] as string;
        const key = `${left} ${right}`;
        const entry = pairs.get(key) ?? { left, right, count: 0 };
        entry.count += count;
        pairs.set(key, entry);
      }
    }
    const best = [...pairs.values()].sort(
      (a, b) =>
        b.count - a.count ||
        (idOf.get(a.left) as number) - (idOf.get(b.left) as number) ||
        (idOf.get(a.right) as number) - (idOf.get(b.right) as number),
    )[0];
    if (best === undefined || best.count < 2) break;
    out.push([best.left, best.right]);
    const merged = best.left + best.right;
    if (!idOf.has(merged)) idOf.set(merged, idOf.size);
    words = words.map(({ symbols, count }) => {
      const next: string[] = [];
      for (let i = 0; i < symbols.length; ) {
        if (i + 1 < symbols.length && symbols[i] === best.left && symbols[i + 1] === best.right) {
          next.push(merged);
          i += 2;
        } else next.push(symbols[i++] as string);
      }
      return { symbols: next, count };
    });
  }
  return out;
}
