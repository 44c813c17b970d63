import { describe, expect, it } from 'vitest';
import { splitCorpus } from './corpus.js';
import { loadMobyDick } from './moby-dick.js';

describe('loadMobyDick', () => {
  const corpus = loadMobyDick();

  it('reads the 139 files in reading order with their heading as title', () => {
    expect(corpus.documents).toHaveLength(139);
    expect(corpus.documents.slice(0, 4).map((d) => d.id)).toEqual(['contents', 'etymology', 'extracts', 'chapter_1']);
    expect(corpus.documents[3]?.title).toBe('CHAPTER 1. Loomings.');
    expect(corpus.documents[3]?.text).toMatch(/^CHAPTER 1\. Loomings\.\n\nCall me Ishmael\./);
    expect(corpus.documents.at(-1)?.id).toBe('epilogue');
  });

  it('holds out every 20th document by default', () => {
    const split = splitCorpus(corpus);
    expect(split.validation.map((d) => d.id)).toEqual(['chapter_17', 'chapter_37', 'chapter_57', 'chapter_77', 'chapter_97', 'chapter_117']);
    expect(split.train).toHaveLength(133);
  });
});
