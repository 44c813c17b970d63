/**
 * Pins the `tokenizer.json` text the kit writes, byte for byte, for a tiny tokenizer of each kind: the
 * files in `fixtures/` were written by `saveTokenizer` and are what Hugging Face `tokenizers` reads.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { removeTemporaryFolders, temporaryFolder } from '../test-helpers.js';
import { BYTE_TO_UNICODE } from './byte-level.js';
import { BpeTokenizer } from './bpe.js';
import { ByteTokenizer } from './bytes.js';
import { saveTokenizer } from './load.js';
import type { Tokenizer } from './tokenizer.js';

/** 256 byte tokens, three merges ('Ġt' 256, 'he' 257, 'Ġthe' 258) and `<|endoftext|>` at 259. */
function tinyBpe(): BpeTokenizer {
  const vocab = new Map<string, number>(BYTE_TO_UNICODE.map((char, byte) => [char, byte]));
  vocab.set('Ġt', 256).set('he', 257).set('Ġthe', 258);
  return new BpeTokenizer({
    vocab,
    merges: [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he']],
    specialTokens: [{ content: '<|endoftext|>', id: 259 }],
  });
}

describe('tokenizer.json text', () => {
  afterAll(removeTemporaryFolders);

  const cases: [string, () => Tokenizer][] = [
    ['bytes.tokenizer.json', () => new ByteTokenizer()],
    ['bpe-tiny.tokenizer.json', tinyBpe],
  ];
  it.each(cases)('saveTokenizer writes fixtures/%s exactly', (fixture, make) => {
    const path = join(temporaryFolder('moepp-data-hf-json-'), 'tokenizer.json');
    saveTokenizer(make(), path);
    expect(readFileSync(path, 'utf8')).toBe(readFileSync(new URL(`./fixtures/${fixture}`, import.meta.url), 'utf8'));
  });
});
