import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, SeededRandom } from '@moepp/tensors-core';
import { loadMobyDick } from '../corpora/moby-dick.js';
import { BpeTokenizer } from './bpe.js';
import { trainBpe } from './bpe-trainer.js';
import { randomText, removeTemporaryFolders, temporaryFolder } from '../test-helpers.js';
import { loadTokenizer, saveTokenizer, tokenizerFromJSON } from './load.js';

describe('tokenizer.json', () => {
  afterAll(removeTemporaryFolders);
  let tokenizer: BpeTokenizer;
  let samples: string[];
  beforeAll(() => {
    const documents = loadMobyDick().documents;
    tokenizer = trainBpe(
      documents.slice(0, 60).map((d) => d.text),
      { vocabSize: 768 },
    );
    const rng = new SeededRandom(11);
    samples = [documents[100]?.text ?? '', ...Array.from({ length: 50 }, () => randomText(rng, 60))];
  });

  it('has the Hugging Face layout: BPE model, ByteLevel pre-tokenizer and decoder, added tokens', () => {
    const json = tokenizer.toJSON();
    expect(json.model.type).toBe('BPE');
    expect(json.pre_tokenizer).toEqual({ type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true });
    expect(json.decoder.type).toBe('ByteLevel');
    expect(json.added_tokens).toEqual([
      { id: 767, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ]);
    expect(Object.keys(json.model.vocab)).toHaveLength(768);
    expect(json.model.merges).toHaveLength(768 - 256 - 1);
    expect(json.model.merges[0]).toBe('Ġ t');
    expect(json.model.vocab['Ġt']).toBe(256);
    expect(json.model.vocab['<|endoftext|>']).toBe(767);
  });

  it('save → load gives the same vocabulary, merges and encodings', () => {
    const path = join(temporaryFolder('moepp-data-'), 'nested', 'tokenizer.json');
    saveTokenizer(tokenizer, path);
    const restored = loadTokenizer(path);
    expect(restored).toBeInstanceOf(BpeTokenizer);
    expect(restored.vocabSize).toBe(tokenizer.vocabSize);
    expect(restored.endOfTextId).toBe(tokenizer.endOfTextId);
    expect((restored as BpeTokenizer).merges).toEqual(tokenizer.merges);
    for (const text of samples) expect(Array.from(restored.encode(text))).toEqual(Array.from(tokenizer.encode(text)));
    expect(JSON.parse(readFileSync(path, 'utf8'))).toEqual(JSON.parse(JSON.stringify(tokenizer.toJSON())));
  });

  it('also reads merges written as [left, right] pairs (tokenizers >= 0.20)', () => {
    const json = tokenizer.toJSON();
    const pairs = { ...json, model: { ...json.model, merges: tokenizer.merges.map(([l, r]) => [l, r]) } };
    const restored = tokenizerFromJSON(pairs);
    for (const text of samples) expect(Array.from(restored.encode(text))).toEqual(Array.from(tokenizer.encode(text)));
  });

  it('rejects what it cannot encode like Hugging Face, naming the field', () => {
    const json = tokenizer.toJSON();
    expect(() => tokenizerFromJSON('{')).toThrow(/not valid JSON/);
    expect(() => tokenizerFromJSON({ ...json, model: { ...json.model, type: 'WordPiece' } })).toThrow(/'model.type' must be 'BPE', got 'WordPiece'/);
    expect(() => tokenizerFromJSON({ ...json, normalizer: { type: 'NFC' } })).toThrow(/'normalizer' must be null/);
    expect(() => tokenizerFromJSON({ ...json, pre_tokenizer: { ...json.pre_tokenizer, add_prefix_space: true } })).toThrow(/add_prefix_space/);
    expect(() => tokenizerFromJSON({ ...json, model: { ...json.model, merges: ['Ġt'] } })).toThrow(/'model.merges\[0\]'/);
  });

  it('names the path of a missing or malformed file', () => {
    const dir = temporaryFolder('moepp-data-');
    expect(() => loadTokenizer(join(dir, 'missing.json'))).toThrow(ConfigError);
    expect(() => loadTokenizer(join(dir, 'missing.json'))).toThrow(/file '.*missing\.json' does not exist/);
    writeFileSync(join(dir, 'bad.json'), '{"model": {"type": "Unigram"}}');
    expect(() => loadTokenizer(join(dir, 'bad.json'))).toThrow(/bad\.json.*'model.type' must be 'BPE'/);
  });
});
