import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { removeTemporaryFolders, temporaryFolder } from './test-helpers.js';
import { ByteTokenizer } from './tokenizers/bytes.js';
import { encodeDocuments, prepareTextData } from './prepare.js';

describe('prepareTextData', () => {
  afterAll(removeTemporaryFolders);
  it('bytes on moby-dick: streams, batches and a validation set from held-out chapters', () => {
    const data = prepareTextData({ corpus: 'moby-dick', tokenizer: 'bytes', seqLen: 64, batchSize: 8, seed: 3, validationWindows: 20 });
    expect(data.tokenizerOrigin).toBe('bytes');
    const encoder = new TextEncoder();
    const bytes = (docs: readonly { text: string }[]): number => docs.reduce((s, d) => s + encoder.encode(d.text).length, 0);
    // Documents joined by '\n\n' (no end-of-text token in a byte vocabulary).
    expect(data.trainTokens.length).toBe(bytes(data.split.train) + 2 * (data.split.train.length - 1));
    expect(data.validationTokens.length).toBe(bytes(data.split.validation) + 2 * (data.split.validation.length - 1));
    expect(new ByteTokenizer().decode(data.validationTokens.subarray(0, 25))).toBe('CHAPTER 17. The Ramadan.\n');
    const batch = data.train.next();
    expect(batch.shape).toEqual([8, 65]);
    expect(data.validation.map((b) => b.batchSize)).toEqual([8, 8, 4]);
    expect(Array.from(data.validation[0]?.inputs.subarray(0, 7) ?? [])).toEqual(Array.from(encoder.encode('CHAPTER')));
  });

  it('trains a BPE on the training split once, then reads it from the cache', () => {
    const cache = join(temporaryFolder('moepp-prepare-'), 'moby-512.tokenizer.json');
    const options = { corpus: 'moby-dick', tokenizer: { bpe: 512 }, seqLen: 32, batchSize: 4, seed: 1, validationWindows: 8, tokenizerCache: cache } as const;
    const first = prepareTextData(options);
    const second = prepareTextData(options);
    expect(first.tokenizerOrigin).toBe('trained');
    expect(second.tokenizerOrigin).toBe('cache');
    expect(second.tokenizer.vocabSize).toBe(512);
    expect(sameInts(second.trainTokens, first.trainTokens)).toBe(true);
    expect(second.validation).toEqual(first.validation);
    expect(Array.from(second.train.next().windowIndices)).toEqual(Array.from(first.train.next().windowIndices));
    // Documents are followed by <|endoftext|> (id 511).
    expect(first.trainTokens.filter((id) => id === 511)).toHaveLength(first.split.train.length);
    expect(first.tokenizer.decode(first.validationTokens)).toBe(first.split.validation.map((d) => `${d.text}<|endoftext|>`).join(''));
    expect(() => prepareTextData({ ...options, tokenizer: { bpe: 1024 } })).toThrow(/is bpe with vocabSize 512, but \{ bpe: 1024 \} was requested/);
  });

  it('resumes the training batches from a cursor', () => {
    const options = { corpus: 'moby-dick', seqLen: 256, batchSize: 16, seed: 9, validationWindows: 4 } as const;
    const run = prepareTextData(options);
    for (let i = 0; i < 5; i++) run.train.next();
    const cursor = JSON.parse(JSON.stringify(run.train.getCursor()));
    const expected = Array.from(run.train.next().tokens);
    const resumed = prepareTextData({ ...options, cursor });
    expect(Array.from(resumed.train.next().tokens)).toEqual(expected);
  });

  it('trains a 2048 BPE on the full sotu training split and holds out 2012–2021', () => {
    const data = prepareTextData({ corpus: 'sotu', tokenizer: { bpe: 2048 }, seqLen: 128, batchSize: 16, seed: 0, validationWindows: 64 });
    expect(data.tokenizer.vocabSize).toBe(2048);
    expect(data.split.validation.map((d) => d.year)).toEqual([2012, 2013, 2014, 2015, 2016, 2017, 2018, 2019, 2020, 2021]);
    const trainChars = data.split.train.reduce((s, d) => s + d.text.length, 0);
    expect(data.trainTokens.length / trainChars).toBeLessThan(0.3);
    expect(data.tokenizer.decode(data.validation[0]?.tokens.subarray(0, 129) ?? [])).toBe(data.tokenizer.decode(data.validationTokens.subarray(0, 129)));
    expect(data.validation).toHaveLength(4);
  });

  it('rejects bad arguments with the field named', () => {
    const base = { corpus: 'moby-dick', seqLen: 64, batchSize: 8, seed: 0, validationWindows: 4 } as const;
    expect(() => prepareTextData({ ...base, seqLen: 0 })).toThrow(ConfigError);
    expect(() => prepareTextData({ ...base, seqLen: 0 })).toThrow(/prepareTextData: 'seqLen' must be an integer >= 1, got 0/);
    expect(() => prepareTextData({ ...base, tokenizer: { bpe: 100 } })).toThrow(/'tokenizer.bpe' must be an integer >= 258, got 100/);
    expect(() => prepareTextData({ ...base, corpus: { path: '/no/such/folder' } })).toThrow(/path '\/no\/such\/folder' does not exist/);
    expect(() => prepareTextData({ ...base, corpus: 'wiki' as never })).toThrow(/'corpus' must be one of 'sotu', 'moby-dick', 'brown', got 'wiki'/);
    expect(() => prepareTextData({ ...base, validationWindows: 100_000 })).toThrow(/holds only \d+ windows of T\+1 = 65 tokens/);
  });
});

/** Fast equality of two int32 arrays (vitest's deep equality is slow on half a million elements). */
function sameInts(a: Int32Array, b: Int32Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('encodeDocuments', () => {
  it('joins documents with a blank line when the tokenizer has no end-of-text token', () => {
    const stream = encodeDocuments(new ByteTokenizer(), [
      { id: 'a', text: 'ab' },
      { id: 'b', text: 'c' },
    ]);
    expect(Array.from(stream)).toEqual([97, 98, 10, 10, 99]);
  });
});
