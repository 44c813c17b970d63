import { describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { splitCorpus, stripBom, type Corpus } from './corpus.js';

const corpus: Corpus = {
  name: 'toy',
  documents: [
    { id: 'a', year: 2000, text: 'aaaa aaaa' },
    { id: 'b', year: 2001, text: 'bbbb bbbb' },
    { id: 'c', year: 2002, text: 'cccc cccc' },
    { id: 'd', text: 'dddd dddd' },
  ],
  credits: 'none',
  licence: 'none',
  heldOut: { kind: 'everyNth', every: 2 },
};

describe('splitCorpus', () => {
  it('holds out every n-th document, the n-th first', () => {
    const split = splitCorpus(corpus);
    expect(split.train.map((d) => d.id)).toEqual(['a', 'c']);
    expect(split.validation.map((d) => d.id)).toEqual(['b', 'd']);
    expect(splitCorpus(corpus, { kind: 'everyNth', every: 3 }).validation.map((d) => d.id)).toEqual(['c']);
  });

  it('holds out the tail, cutting at the first whitespace after the cut', () => {
    // 36 characters; 25% → cut at character 27 = 'd' document offset 0 → whole 'd' held out.
    let split = splitCorpus(corpus, { kind: 'tail', fraction: 0.25 });
    expect(split.validation.map((d) => d.id)).toEqual(['d']);
    // 20% → cut at 28.8 → 28 = offset 1 in 'dddd dddd' → moved to the space at offset 4.
    split = splitCorpus(corpus, { kind: 'tail', fraction: 0.2 });
    expect(split.train.map((d) => [d.id, d.text])).toEqual([
      ['a', 'aaaa aaaa'],
      ['b', 'bbbb bbbb'],
      ['c', 'cccc cccc'],
      ['d#head', 'dddd'],
    ]);
    expect(split.validation.map((d) => [d.id, d.text])).toEqual([['d#tail', ' dddd']]);
  });

  it('needs a year on every document for year rules', () => {
    expect(() => splitCorpus(corpus, { kind: 'years', years: [2001] })).toThrow(/'d' of corpus 'toy' has none/);
    const dated = { ...corpus, documents: corpus.documents.slice(0, 3) };
    expect(splitCorpus(dated, { kind: 'yearRange', from: 2001, to: 2001 }).validation.map((d) => d.id)).toEqual(['b']);
  });

  it('rejects malformed rules with the field named', () => {
    expect(() => splitCorpus(corpus, { kind: 'everyNth', every: 1 })).toThrow(/'every' must be an integer >= 2, got 1/);
    expect(() => splitCorpus(corpus, { kind: 'tail', fraction: 0 })).toThrow(/'fraction' must be a finite number > 0 <= 0.5, got 0/);
    expect(() => splitCorpus(corpus, { kind: 'random' } as never)).toThrow(ConfigError);
    expect(() => splitCorpus(corpus, { kind: 'everyNth', every: 10 })).toThrow(/leaves 4 training and 0 held-out/);
  });
});

describe('stripBom', () => {
  it('removes only a leading byte-order mark', () => {
    expect(stripBom('\uFEFFabc')).toBe('abc');
    expect(stripBom('a\uFEFFbc')).toBe('a\uFEFFbc');
  });
});
