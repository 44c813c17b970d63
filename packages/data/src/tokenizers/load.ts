/**
 * Reading and writing tokenizers in Hugging Face `tokenizer.json` form.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConfigError, describe } from '@moepp/tensors-core';
import { BYTE_TO_UNICODE } from './byte-level.js';
import { BpeTokenizer, type SpecialToken } from './bpe.js';
import { ByteTokenizer } from './bytes.js';
import type { Tokenizer } from './tokenizer.js';

const op = 'tokenizerFromJSON';

/**
 * Builds a tokenizer from a `tokenizer.json` record — one written by the kit (`tokenizer.toJSON()`), or
 * any GPT-2 style byte-level BPE file (GPT-2's own, or one trained with HF `ByteLevelBPETokenizer`).
 * A BPE with no merges, no added tokens and the 256 byte tokens at ids 0–255 is read back as a
 * {@link ByteTokenizer}.
 *
 * Supported: `model.type: 'BPE'`, a `ByteLevel` pre-tokenizer without `add_prefix_space`, no normaliser,
 * merges as `'a b'` strings or `['a', 'b']` pairs; `added_tokens` are matched literally as special
 * tokens. Anything else is rejected rather than encoded differently from Hugging Face.
 *
 * @param json - the file's text, or the parsed record
 * @returns the tokenizer
 * @throws `ConfigError` naming the unsupported or malformed field
 */
export function tokenizerFromJSON(json: unknown): Tokenizer {
  let record: unknown = json;
  if (typeof json === 'string') {
    try {
      record = JSON.parse(json);
    } catch (error) {
      throw new ConfigError(`${op}: not valid JSON (${(error as Error).message})`);
    }
  }
  if (!isObject(record)) throw new ConfigError(`${op}: expected a tokenizer.json object, got ${describe(record)}`);
  const model = record['model'];
  if (!isObject(model) || model['type'] !== 'BPE') {
    throw new ConfigError(`${op}: only byte-level BPE models are supported; 'model.type' must be 'BPE', got ${describe(isObject(model) ? model['type'] : model)}`);
  }
  if (record['normalizer'] !== null && record['normalizer'] !== undefined) {
    throw new ConfigError(`${op}: 'normalizer' must be null (text is encoded as given), got ${describe(record['normalizer'])}`);
  }
  const pre = record['pre_tokenizer'];
  if (!isObject(pre) || pre['type'] !== 'ByteLevel') {
    throw new ConfigError(`${op}: 'pre_tokenizer.type' must be 'ByteLevel', got ${describe(isObject(pre) ? pre['type'] : pre)}`);
  }
  if (pre['add_prefix_space'] === true) throw new ConfigError(`${op}: 'pre_tokenizer.add_prefix_space' must be false, got true`);
  if (pre['use_regex'] === false) throw new ConfigError(`${op}: 'pre_tokenizer.use_regex' must be true, got false`);
  const decoder = record['decoder'];
  if (decoder !== null && decoder !== undefined && (!isObject(decoder) || decoder['type'] !== 'ByteLevel')) {
    throw new ConfigError(`${op}: 'decoder.type' must be 'ByteLevel', got ${describe(isObject(decoder) ? decoder['type'] : decoder)}`);
  }
  if (model['ignore_merges'] === true) throw new ConfigError(`${op}: 'model.ignore_merges' must be false, got true`);
  if (model['dropout'] !== null && model['dropout'] !== undefined && model['dropout'] !== 0) {
    throw new ConfigError(`${op}: 'model.dropout' must be null (deterministic encoding), got ${describe(model['dropout'])}`);
  }

  const vocabRecord = model['vocab'];
  if (!isObject(vocabRecord)) throw new ConfigError(`${op}: 'model.vocab' must be an object of token → id, got ${describe(vocabRecord)}`);
  const mergesField = model['merges'];
  if (!Array.isArray(mergesField)) throw new ConfigError(`${op}: 'model.merges' must be an array, got ${describe(mergesField)}`);
  const merges = mergesField.map((merge: unknown, i): [string, string] => {
    if (typeof merge === 'string') {
      const space = merge.indexOf(' ');
      if (space > 0 && space < merge.length - 1 && merge.indexOf(' ', space + 1) < 0) return [merge.slice(0, space), merge.slice(space + 1)];
    } else if (Array.isArray(merge) && merge.length === 2 && typeof merge[0] === 'string' && typeof merge[1] === 'string') {
      return [merge[0], merge[1]];
    }
    throw new ConfigError(`${op}: 'model.merges[${i}]' must be 'left right' or ['left', 'right'], got ${describe(merge)}`);
  });
  const addedField = record['added_tokens'] ?? [];
  if (!Array.isArray(addedField)) throw new ConfigError(`${op}: 'added_tokens' must be an array, got ${describe(addedField)}`);
  const specialTokens = addedField.map((added: unknown, i): SpecialToken => {
    if (!isObject(added) || typeof added['content'] !== 'string' || typeof added['id'] !== 'number') {
      throw new ConfigError(`${op}: 'added_tokens[${i}]' must have a string 'content' and a number 'id', got ${describe(added)}`);
    }
    return { content: added['content'], id: added['id'] };
  });

  const specialContents = new Set(specialTokens.map((s) => s.content));
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(vocabRecord)) {
    if (typeof id !== 'number') throw new ConfigError(`${op}: 'model.vocab' id of '${token}' must be a number, got ${describe(id)}`);
    if (!specialContents.has(token)) vocab.set(token, id);
  }
  if (merges.length === 0 && specialTokens.length === 0 && vocab.size === 256 && BYTE_TO_UNICODE.every((char, byte) => vocab.get(char) === byte)) {
    return new ByteTokenizer();
  }
  return new BpeTokenizer({ vocab, merges, specialTokens });
}

/**
 * Reads a tokenizer from a `tokenizer.json` file (see {@link tokenizerFromJSON}).
 *
 * @param path - the file
 * @returns the tokenizer
 * @throws `ConfigError` naming the path if it does not exist, or the problem with its content
 */
export function loadTokenizer(path: string): Tokenizer {
  if (!existsSync(path)) throw new ConfigError(`loadTokenizer: file '${path}' does not exist`);
  try {
    return tokenizerFromJSON(readFileSync(path, 'utf8'));
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError(`loadTokenizer: '${path}': ${error.message}`);
    throw error;
  }
}

/**
 * Writes a tokenizer as `tokenizer.json` (pretty-printed, as Hugging Face writes it), creating the folder.
 * Python: `tokenizers.Tokenizer.from_file(path)` reads it.
 *
 * @param tokenizer - any tokenizer of the kit
 * @param path - the file to write
 */
export function saveTokenizer(tokenizer: Tokenizer, path: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(tokenizer.toJSON(), null, 2)}\n`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
