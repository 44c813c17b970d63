/**
 * Any plain-text file or folder of `.txt` files a user points to.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { ConfigError } from '@moepp/tensors-core';
import { stripBom, type Corpus, type CorpusDocument, type HeldOutRule } from './corpus.js';

/** Options of {@link loadTextFiles}. */
export interface TextFilesOptions {
  /** Corpus name; default the path as given. */
  readonly name?: string;
  /** Credits to carry along; default `'Text files from <path>'`. */
  readonly credits?: string;
  /** Licence to carry along; default `'unknown (user-supplied text)'`. */
  readonly licence?: string;
}

/**
 * Loads a `.txt` file, or every `.txt` file under a folder (recursively; hidden entries and symbolic
 * links to folders skipped), as
 * one document per file, sorted by path relative to the folder with `/` separators (plain code-unit
 * order, so the order is the same on every machine). Files are read as UTF-8; a leading byte-order mark
 * is removed; nothing else is changed.
 *
 * Default held-out rule: every 20th file when there are at least 20 files, otherwise the last 5% of the
 * characters (see {@link HeldOutRule}).
 *
 * @param path - a file (any extension) or a folder
 * @param options - name, credits and licence to record
 * @returns the corpus; document ids are the relative paths (the file name for a single file)
 * @throws `ConfigError` naming the path if it does not exist, holds no `.txt` file, or all its
 *   files are empty
 */
export function loadTextFiles(path: string, options: TextFilesOptions = {}): Corpus {
  const op = 'loadTextFiles';
  if (typeof path !== 'string' || path.length === 0) throw new ConfigError(`${op}: 'path' must be a non-empty string, got ${JSON.stringify(path)}`);
  const absolute = resolve(path);
  if (!existsSync(absolute)) throw new ConfigError(`${op}: path '${path}' does not exist (resolved to '${absolute}')`);
  let files: { id: string; file: string }[];
  if (statSync(absolute).isDirectory()) {
    files = listTextFiles(absolute).map((file) => ({ id: relative(absolute, file).split(sep).join('/'), file }));
    files.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (files.length === 0) throw new ConfigError(`${op}: folder '${path}' holds no .txt files (searched recursively)`);
  } else {
    files = [{ id: absolute.split(sep).pop() as string, file: absolute }];
  }
  const documents: CorpusDocument[] = files
    .map(({ id, file }) => ({ id, title: id, text: stripBom(readFileSync(file, 'utf8')) }))
    .filter((d) => d.text.length > 0);
  if (documents.length === 0) throw new ConfigError(`${op}: path '${path}' holds no text (${files.length} empty file${files.length === 1 ? '' : 's'})`);
  const heldOut: HeldOutRule = documents.length >= 20 ? { kind: 'everyNth', every: 20 } : { kind: 'tail', fraction: 0.05 };
  return {
    name: options.name ?? path,
    documents,
    credits: options.credits ?? `Text files from ${path}`,
    licence: options.licence ?? 'unknown (user-supplied text)',
    heldOut,
  };
}

function listTextFiles(directory: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    if (entry.name.startsWith('.')) continue;
    const full = join(directory, entry.name);
    if (entry.isDirectory()) out.push(...listTextFiles(full));
    else if (!entry.name.toLowerCase().endsWith('.txt')) continue;
    // Files, and symbolic links to files (links to folders are not followed, so there are no cycles).
    else if (entry.isFile() || (entry.isSymbolicLink() && statSync(full).isFile())) out.push(full);
  }
  return out;
}
