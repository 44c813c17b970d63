import { describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { ByteTokenizer } from '../tokenizers/bytes.js';
import { encodeTagged } from '../tokenizers/tagged.js';
import { BROWN_NOTICE, baseBrownTag, detokenizeBrown, loadBrown, parseBrownText, parseBrownToken, posClassOf } from './brown.js';
import { splitCorpus } from './corpus.js';

describe('parseBrownToken', () => {
  it('splits on the last slash, so words may hold a slash', () => {
    expect(parseBrownToken('1/2/cd')).toEqual({ word: '1/2', rawTag: 'cd', tag: 'cd', posClass: 'other' });
    expect(parseBrownToken('and/or/cc')).toMatchObject({ word: 'and/or', tag: 'cc' });
    expect(parseBrownToken('//in')).toMatchObject({ word: '/', tag: 'in' });
    expect(parseBrownToken('Fulton/np-tl')).toEqual({ word: 'Fulton', rawTag: 'np-tl', tag: 'np', posClass: 'noun' });
    expect(parseBrownToken("didn't/dod*")).toEqual({ word: "didn't", rawTag: 'dod*', tag: 'dod', posClass: 'verb' });
  });

  it('rejects tokens without a word and a tag', () => {
    expect(() => parseBrownToken('word')).toThrow(ConfigError);
    expect(() => parseBrownToken('word/')).toThrow(/token 'word\/' is not of the form word\/tag/);
  });
});

describe('baseBrownTag and posClassOf', () => {
  it('strips -hl, -tl, -nc, fw- and negation marks, component by component', () => {
    const cases: [string, string][] = [
      ['vb', 'vb'],
      ['vbd-hl', 'vbd'],
      ['np-tl', 'np'],
      ['nn-tl-hl', 'nn'],
      ['fw-nn-tl', 'nn'],
      ['md*', 'md'],
      ['bez*', 'bez'],
      ['*', '*'],
      ['*-hl', '*'],
      ['ppss+md', 'ppss+md'],
      ['pps+bez-nc', 'pps+bez'],
      ['np$', 'np$'],
    ];
    for (const [raw, base] of cases) expect(baseBrownTag(raw), raw).toBe(base);
  });

  it('classes verbs (vb*, be*, do*, hv*, md), nouns (nn*, np*) and the rest', () => {
    const classes: Record<string, string> = {
      vb: 'verb', vbz: 'verb', vbg: 'verb', bedz: 'verb', ben: 'verb', dod: 'verb', hvd: 'verb', md: 'verb',
      'vb+ppo': 'verb', nn: 'noun', nns$: 'noun', np: 'noun', nps: 'noun', nr: 'other', dt: 'other',
      ppss: 'other', 'ppss+md': 'other', jj: 'other', '*': 'other', in: 'other',
    };
    for (const [tag, posClass] of Object.entries(classes)) expect(posClassOf(tag), tag).toBe(posClass);
  });
});

describe('detokenizeBrown', () => {
  it('joins words with spaces, attaching punctuation and quotes', () => {
    const sentences = parseBrownText(
      "\n\n\tThe/at jury/nn said/vbd ,/, ``/`` it's/pps+bez (/( 1/2/cd )/) done/vbn ''/'' ./.\n\n\tIt/pps ended/vbd ;/. fine/jj !/.\n",
    );
    expect(sentences).toHaveLength(2);
    expect(detokenizeBrown(sentences.flat())).toBe('The jury said, "it\'s (1/2) done". It ended; fine!');
  });
});

describe('loadBrown', () => {
  const corpus = loadBrown();

  it('reads 500 files, 1,161,192 tagged words, with genre, title and credits', () => {
    expect(corpus.documents).toHaveLength(500);
    const words = corpus.documents.reduce((sum, d) => sum + d.sentences.reduce((s, sentence) => s + sentence.length, 0), 0);
    expect(words).toBe(1_161_192);
    const first = corpus.documents[0];
    expect(first).toMatchObject({ id: 'ca01', category: 'news', title: 'The Atlanta Constitution', year: 1961 });
    expect(first?.sentences[0]?.slice(0, 3)).toEqual([
      { word: 'The', rawTag: 'at', tag: 'at', posClass: 'other' },
      { word: 'Fulton', rawTag: 'np-tl', tag: 'np', posClass: 'noun' },
      { word: 'County', rawTag: 'nn-tl', tag: 'nn', posClass: 'noun' },
    ]);
    expect(first?.text.startsWith("The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced \"no evidence\" that any irregularities took place.")).toBe(true);
    expect(corpus.documents.at(-1)?.id).toBe('cr09');
    expect(corpus.credits).toContain('W. N. Francis and H. Kucera');
    expect(corpus.credits).toContain('redistribution permitted');
    expect(BROWN_NOTICE).toBe('Distributed with the permission of the copyright holder,\nredistribution permitted.');
  });

  it('holds out every 20th file, across genres', () => {
    const split = splitCorpus(corpus);
    expect(split.validation).toHaveLength(25);
    expect(split.validation.slice(0, 3).map((d) => d.id)).toEqual(['ca20', 'ca40', 'cb16']);
    expect(new Set(split.validation.map((d) => d.category)).size).toBe(14); // all but science_fiction (6 files)
  });

  it('traces the tokens of a tagged sentence to words and coarse classes', () => {
    const sentence = corpus.documents[0]?.sentences[0] ?? [];
    const encoding = encodeTagged(new ByteTokenizer(), sentence);
    expect(encoding.text).toBe(detokenizeBrown(sentence));
    const said = sentence.findIndex((w) => w.word === 'said');
    const start = Array.from(encoding.wordIndex).indexOf(said);
    expect(new ByteTokenizer().decode(encoding.ids.slice(start, start + 5))).toBe(' said');
    expect(encoding.tags[start]).toBe('vbd');
    expect(posClassOf(encoding.tags[start] as string)).toBe('verb');
  });
});
