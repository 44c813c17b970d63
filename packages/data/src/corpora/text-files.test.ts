import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { removeTemporaryFolders, temporaryFolder } from '../test-helpers.js';
import { splitCorpus } from './corpus.js';
import { loadTextFiles } from './text-files.js';

function folder(files: Record<string, string>): string {
  const root = temporaryFolder('moepp-text-');
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(join(root, name, '..'), { recursive: true });
    writeFileSync(join(root, name), content);
  }
  return root;
}

describe('loadTextFiles', () => {
  afterAll(removeTemporaryFolders);
  it('reads .txt files recursively, sorted by relative path, skipping other and hidden files', () => {
    const root = folder({
      'b.txt': 'second',
      'a/z.txt': '\uFEFFfirst', // BOM removed
      'a/notes.md': 'not text',
      '.hidden/x.txt': 'hidden',
      'C.TXT': 'capital',
      'empty.txt': '',
    });
    const corpus = loadTextFiles(root);
    expect(corpus.documents.map((d) => [d.id, d.text])).toEqual([
      ['C.TXT', 'capital'],
      ['a/z.txt', 'first'],
      ['b.txt', 'second'],
    ]);
    expect(corpus.name).toBe(root);
    expect(corpus.heldOut).toEqual({ kind: 'tail', fraction: 0.05 });
  });

  it('reads a single file, and holds out its last 5% by default', () => {
    const root = folder({ 'book.txt': 'word '.repeat(1000) });
    const corpus = loadTextFiles(join(root, 'book.txt'), { name: 'book' });
    expect(corpus.documents.map((d) => d.id)).toEqual(['book.txt']);
    const split = splitCorpus(corpus);
    expect(split.train[0]?.text.length).toBe(4754); // cut at 4750 → the space at 4754
    expect(split.validation[0]?.text.length).toBe(246);
  });

  it('holds out every 20th file when there are at least 20', () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 40; i++) files[`f${String(i).padStart(2, '0')}.txt`] = `text ${i}`;
    const split = splitCorpus(loadTextFiles(folder(files)));
    expect(split.validation.map((d) => d.id)).toEqual(['f19.txt', 'f39.txt']);
  });

  it('names the path when it does not exist or holds no text', () => {
    expect(() => loadTextFiles('/no/such/corpus')).toThrow(ConfigError);
    expect(() => loadTextFiles('/no/such/corpus')).toThrow(/path '\/no\/such\/corpus' does not exist/);
    const empty = folder({ 'notes.md': 'x' });
    expect(() => loadTextFiles(empty)).toThrow(new RegExp(`folder '${empty}' holds no .txt files`));
    const blank = folder({ 'a.txt': '', 'b/c.txt': '' });
    expect(() => loadTextFiles(blank)).toThrow(/holds no text \(2 empty files\)/);
  });
});
