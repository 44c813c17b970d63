import { beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, SeededRandom } from '@moepp/tensors-core';
import { loadMobyDick } from '../corpora/moby-dick.js';
import { loadSotu } from '../corpora/sotu.js';
import { BpeTokenizer } from './bpe.js';
import { trainBpe } from './bpe-trainer.js';
import { BYTE_TO_UNICODE } from './byte-level.js';
import { randomText } from '../test-helpers.js';

describe('BpeTokenizer', () => {
  let tokenizer: BpeTokenizer;
  beforeAll(() => {
    tokenizer = trainBpe(
      loadMobyDick().documents.map((d) => d.text),
      { vocabSize: 2048 },
    );
  });

  it('round-trips seeded random UTF-8 text: scripts, emoji, combining marks, controls', () => {
    const rng = new SeededRandom(2024);
    for (let i = 0; i < 300; i++) {
      const text = randomText(rng, 1 + rng.int(80));
      const ids = tokenizer.encode(text);
      expect(tokenizer.decode(ids)).toBe(text);
      ids.forEach((id) => expect(id >= 0 && id < tokenizer.vocabSize).toBe(true));
    }
  });

  it('round-trips edge cases, including the empty string', () => {
    for (const text of ['', ' ', '\n', '\u0000', 'e\u0301', '👩‍👩‍👧‍👦', '🇫🇷', '東京タワー', '  leading and trailing  ', 'a\r\nb', '\uFEFFbom', '💩'.repeat(200), '-'.repeat(5000)]) {
      expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
    }
    expect(tokenizer.encode('')).toHaveLength(0);
  });

  it('round-trips a corpus it was not trained on and compresses English', () => {
    const address = loadSotu().documents.find((d) => d.id === '2021_joseph_r_biden_d');
    const text = address?.text ?? '';
    const ids = tokenizer.encode(text);
    expect(tokenizer.decode(ids)).toBe(text);
    expect(ids.length / text.length).toBeLessThan(0.4); // bytes would be 1.0
  });

  it('merges long pre-tokens with the heap exactly as with the GPT-2 loop', () => {
    const rng = new SeededRandom(9);
    const encoder = new TextEncoder();
    const samples = ['ssssssssssss', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaa', ' thethethethe', ' whale-ship', '1234567890'];
    for (let i = 0; i < 200; i++) samples.push(' ' + 'etaoinshr'.split('').map(() => 'etaoinshrdlu'[rng.int(12)]).join('').repeat(1 + rng.int(4)));
    for (const word of samples) {
      const bytes = encoder.encode(word);
      expect(Array.from(tokenizer.encodeWord(bytes, true))).toEqual(Array.from(tokenizer.encodeWord(bytes, false)));
    }
  });

  it('matches special tokens written in the text', () => {
    const eot = tokenizer.endOfTextId as number;
    expect(eot).toBe(2047);
    const ids = Array.from(tokenizer.encode('the end<|endoftext|>Call me'));
    expect(ids.filter((id) => id === eot)).toHaveLength(1);
    expect(tokenizer.decode(ids)).toBe('the end<|endoftext|>Call me');
    expect(tokenizer.idToToken(eot)).toBe('<|endoftext|>');
  });

  it('rejects ids outside the vocabulary', () => {
    expect(() => tokenizer.decode([1, 2048])).toThrow(ConfigError);
    expect(() => tokenizer.decode([1, -1])).toThrow(/'ids\[1\]' must be a token id in \[0, 2048\), got -1/);
    expect(() => tokenizer.idToToken(4096)).toThrow(/got 4096/);
  });
});

describe('BpeTokenizer construction', () => {
  it('names a merge whose tokens are not in the vocabulary', () => {
    const vocab = new Map<string, number>(BYTE_TO_UNICODE.map((char, byte) => [char, byte]));
    expect(() => new BpeTokenizer({ vocab, merges: [['a', 'b']] })).toThrow(/merge 0 \('a' 'b'\) needs 'ab'/);
    vocab.delete('Ġ');
    expect(() => new BpeTokenizer({ vocab, merges: [] })).toThrow(/lacks the byte-level token 'Ġ' for byte 0x20/);
  });
});
