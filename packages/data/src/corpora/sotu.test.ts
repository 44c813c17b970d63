import { describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { describeSplit, splitCorpus } from './corpus.js';
import { SOTU_DEFAULT_HELD_OUT, loadSotu } from './sotu.js';

describe('loadSotu', () => {
  const corpus = loadSotu();

  it('reads the 233 addresses in year order with president, party and year from the file name', () => {
    expect(corpus.name).toBe('sotu');
    expect(corpus.documents).toHaveLength(233);
    const first = corpus.documents[0];
    expect(first).toMatchObject({ id: '1790_george_washington_n', year: 1790, president: 'George Washington', party: 'none', title: 'George Washington, 1790' });
    expect(first?.text.startsWith('Fellow-Citizens of the Senate and House of Representatives:')).toBe(true);
    expect(corpus.documents.at(-1)).toMatchObject({ id: '2021_joseph_r_biden_d', year: 2021, party: 'Democratic' });
    const years = corpus.documents.map((d) => d.year);
    expect(years).toEqual([...years].sort((a, b) => a - b));
    expect(corpus.documents.reduce((sum, d) => sum + d.text.length, 0)).toBe(10_760_042);
    expect(corpus.licence).toMatch(/CC0/);
  });

  it('holds out 2012–2021 by default: ten addresses, no year on both sides', () => {
    expect(SOTU_DEFAULT_HELD_OUT).toEqual({ kind: 'yearRange', from: 2012, to: 2021 });
    const split = splitCorpus(corpus);
    expect(split.validation.map((d) => d.year)).toEqual([2012, 2013, 2014, 2015, 2016, 2017, 2018, 2019, 2020, 2021]);
    expect(split.train).toHaveLength(223);
    const trainYears = new Set(split.train.map((d) => d.year));
    expect(split.validation.some((d) => trainYears.has(d.year))).toBe(false);
    expect(Math.max(...trainYears)).toBe(2011);
    expect(describeSplit(split)).toMatch(/^train 223 documents \([\d,]+ chars\), validation 10 documents \([\d,]+ chars\), rule yearRange 2012–2021$/);
  });

  it('splits deterministically and by any set of years', () => {
    expect(splitCorpus(loadSotu())).toEqual(splitCorpus(corpus));
    const split = splitCorpus(corpus, { kind: 'years', years: [1953, 1961] });
    expect(split.validation.map((d) => d.id)).toEqual([
      '1953_dwight_d_eisenhower_r',
      '1953_harry_s_truman_d',
      '1961_dwight_d_eisenhower_r',
      '1961_john_f_kennedy_d',
    ]);
    expect(split.train).toHaveLength(229);
  });

  it('refuses a rule that holds out nothing', () => {
    expect(() => splitCorpus(corpus, { kind: 'years', years: [1700] })).toThrow(ConfigError);
    expect(() => splitCorpus(corpus, { kind: 'yearRange', from: 2030, to: 2040 })).toThrow(/leaves 233 training and 0 held-out documents of corpus 'sotu'/);
    expect(() => splitCorpus(corpus, { kind: 'yearRange', from: 2020, to: 2010 })).toThrow(/'to' must be an integer >= 2020, got 2010/);
  });
});
