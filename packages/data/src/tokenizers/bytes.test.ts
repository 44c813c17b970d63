import { describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { ByteTokenizer } from './bytes.js';
import { tokenizerFromJSON } from './load.js';

describe('ByteTokenizer', () => {
  const tokenizer = new ByteTokenizer();

  it('encodes UTF-8 bytes as ids and decodes them back', () => {
    expect(Array.from(tokenizer.encode('aé€'))).toEqual([0x61, 0xc3, 0xa9, 0xe2, 0x82, 0xac]);
    expect(tokenizer.encode('')).toEqual(new Int32Array(0));
    expect(tokenizer.decode([0x61, 0xc3, 0xa9, 0xe2, 0x82, 0xac])).toBe('aé€');
    expect(tokenizer.vocabSize).toBe(256);
    expect(tokenizer.endOfTextId).toBeNull();
    expect(tokenizer.idToToken(32)).toBe('Ġ');
    expect(tokenizer.decode([0xef, 0xbb, 0xbf, 0x61])).toBe('\uFEFFa'); // a leading BOM is text too
  });

  it('rejects ids outside [0, 256)', () => {
    expect(() => tokenizer.decode([65, 256])).toThrow(ConfigError);
    expect(() => tokenizer.decode([65, 256])).toThrow(/'ids\[1\]' must be an integer in \[0, 256\), got 256/);
  });

  it('writes a byte-level BPE tokenizer.json with no merges and reads it back as bytes', () => {
    const json = tokenizer.toJSON();
    expect(json.model.type).toBe('BPE');
    expect(json.model.merges).toEqual([]);
    expect(Object.keys(json.model.vocab)).toHaveLength(256);
    expect(json.model.vocab['Ġ']).toBe(32);
    const restored = tokenizerFromJSON(JSON.stringify(json));
    expect(restored).toBeInstanceOf(ByteTokenizer);
  });
});
