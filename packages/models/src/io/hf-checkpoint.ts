/**
 * Checkpoints in the official MoE++ Hugging Face layout: a folder with
 *
 * ```
 * config.json          the official MoeConfig fields (see hf-config.ts), plus the kit's `moepp_kit` field
 * model.safetensors    every parameter under its official name, PyTorch layout (`nn.Linear` weights [out, in])
 * moepp_kit.json       which kit version wrote the folder, and the checkpoint format version
 * ```
 *
 * Official names, for block `l`, expert `e` (FFN) and `c` (constant):
 *
 * ```
 * model.embed_tokens.weight                              [V, D]
 * model.layers.{l}.self_attn.{q,k,v,o}_proj.weight        [D, D]
 * model.layers.{l}.input_layernorm.weight                 [D]
 * model.layers.{l}.post_attention_layernorm.weight        [D]
 * model.layers.{l}.mlp.{gate,up}_proj.weight              [F, D]   dense blocks (LLaMA MLP)
 * model.layers.{l}.mlp.down_proj.weight                   [D, F]
 * model.layers.{l}.mlp.moe.gate.wg.weight                 [E, D]   (two-layer gate: wg.0 [8E, D], wg.2 [E, 8E])
 * model.layers.{l}.mlp.moe.gate.gate_map.weight           [E, E]   gating residual
 * model.layers.{l}.mlp.moe.experts.experts.{e}.up_proj.weight    [2F, D]
 * model.layers.{l}.mlp.moe.experts.experts.{e}.down_proj.weight  [D, F]
 * model.layers.{l}.mlp.moe.experts.experts.{c}.constant          [D]
 * model.layers.{l}.mlp.moe.experts.experts.{c}.wg.weight         [2, D]
 * model.norm.weight                                       [D]
 * lm_head.weight                                          [V, D]   absent when the embeddings are tied
 * ```
 *
 * {@link exportCheckpoint} replaces the whole folder atomically; {@link importCheckpoint} is strict: a
 * missing, unexpected, mis-shaped, integer-typed or non-finite tensor is an error naming the file and the
 * tensor, and no half-loaded model is ever returned.
 */
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readFile, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@moepp/tensors-core';
import { DecoderLM } from '../decoder.js';
import type { ModelConfig } from '../config.js';
import type { NamedParameter } from '../parameters.js';
import { fromHfConfig, toHfConfig } from './hf-config.js';
import {
  CheckpointError,
  readSafetensorsFile,
  writeSafetensorsFile,
  type DecodedSafetensors,
  type DecodedTensor,
  type SafetensorsInput,
} from './safetensors.js';

/**
 * Version of the checkpoint folder layout this kit writes (in `moepp_kit.json` and the safetensors
 * metadata). {@link importCheckpoint} refuses folders written with a newer version.
 */
export const CHECKPOINT_FORMAT_VERSION = 1;

/** Options of {@link exportCheckpoint}. */
export interface ExportCheckpointOptions {
  /**
   * Extra string-to-string entries for the safetensors `__metadata__` (e.g. a run id or the training
   * step). The keys `format`, `moepp_kit_version`, `moepp_kit_format_version` and `moepp_kit_sha256` are
   * the kit's own and may not be given.
   */
  readonly metadata?: Readonly<Record<string, string>>;
}

const CONFIG_FILE = 'config.json';
const WEIGHTS_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';
const KIT_FILE = 'moepp_kit.json';
const PACKAGE_NAME = '@moepp/models';

/** Safetensors metadata keys the kit writes. `format: 'pt'` is what `transformers` requires to load a file. */
const META_FORMAT = 'format';
const META_KIT_VERSION = 'moepp_kit_version';
const META_FORMAT_VERSION = 'moepp_kit_format_version';
const META_SHA256 = 'moepp_kit_sha256';
const RESERVED_METADATA = [META_FORMAT, META_KIT_VERSION, META_FORMAT_VERSION, META_SHA256];

/**
 * Buffers that some PyTorch / transformers versions save next to the parameters: the rotary tables of
 * each attention layer. They are recomputed from `rope_theta`, so the importer ignores them.
 */
const IGNORED_TENSOR = /^model\.layers\.\d+\.self_attn\.rotary_emb\.(inv_freq|cos_cached|sin_cached)$/;

/** At most this many names are listed in one "missing" / "unexpected" message. */
const MAX_LISTED = 8;

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isNotFound(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'ENOENT';
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

// ---------------------------------------------------------------------------------------------------------
// Export

/**
 * Writes a model as a checkpoint folder in the official MoE++ Hugging Face layout: `config.json`
 * ({@link toHfConfig}), `model.safetensors` (float32, official names, `nn.Linear` weights transposed to
 * PyTorch's `[out, in]`) and `moepp_kit.json` (kit and format version). The safetensors metadata holds
 * `format: "pt"`, the kit and format versions, a SHA-256 of the tensors (checked on import) and
 * `options.metadata`.
 *
 * The folder is replaced as a whole: the files are written and flushed in a temporary sibling folder
 * (`.<name>.<pid>.<random>.tmp`), an existing folder is renamed aside, the new one renamed into place and
 * the old one deleted. Between the two renames `dir` briefly does not exist, but it never holds a partial
 * checkpoint; if anything fails the temporary folder is removed and an existing checkpoint is left (or put
 * back) in place. Missing parent folders are created. Everything else in an existing `dir` (e.g. a
 * tokenizer) is replaced too.
 *
 * @param model - the model to save (not modified)
 * @param dir - the checkpoint folder
 * @param options - extra safetensors metadata
 * @returns when the folder is in place
 * @throws {@link CheckpointError} naming `dir` when the model's parameters cannot be read (duplicate names,
 *   disposed or non-float32 variables), the metadata is invalid, `dir` exists but is not a folder, or a
 *   file cannot be written; the underlying error is the `cause`
 */
export async function exportCheckpoint(model: DecoderLM, dir: string, options: ExportCheckpointOptions = {}): Promise<void> {
  const op = 'exportCheckpoint';
  if (!(model instanceof DecoderLM)) throw new CheckpointError(`${op}: 'model' must be a DecoderLM, got ${typeof model}`);
  if (typeof dir !== 'string' || dir.length === 0) throw new CheckpointError(`${op}: 'dir' must be a non-empty path, got ${JSON.stringify(dir)}`);
  const target = resolve(dir);
  const userMetadata = checkUserMetadata(op, options.metadata);
  const parent = dirname(target);
  const token = `${process.pid}.${randomBytes(6).toString('hex')}`;
  const staging = join(parent, `.${basename(target)}.${token}.tmp`);
  let stagingExists = false;
  try {
    const tensors = checkpointTensors(model); // PyTorch layout, read before anything touches the disk
    const kitVersion = await readKitVersion();
    const sha256 = tensorsSha256(new Map(Object.entries(tensors)));
    const metadata: Record<string, string> = {
      ...userMetadata,
      [META_FORMAT]: 'pt',
      [META_KIT_VERSION]: kitVersion,
      [META_FORMAT_VERSION]: String(CHECKPOINT_FORMAT_VERSION),
      [META_SHA256]: sha256,
    };
    const kitInfo = {
      package: PACKAGE_NAME,
      version: kitVersion,
      format_version: CHECKPOINT_FORMAT_VERSION,
      weights: WEIGHTS_FILE,
      tensors_sha256: sha256,
    };
    await mkdir(parent, { recursive: true });
    await mkdir(staging);
    stagingExists = true;
    await writeSafetensorsFile(join(staging, WEIGHTS_FILE), tensors, metadata);
    await writeTextFile(join(staging, CONFIG_FILE), `${JSON.stringify(toHfConfig(model.config), null, 2)}\n`);
    await writeTextFile(join(staging, KIT_FILE), `${JSON.stringify(kitInfo, null, 2)}\n`);
    await syncDirectory(staging);
    await swapIntoPlace(staging, target, token);
    stagingExists = false;
  } catch (error) {
    if (stagingExists) await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    throw new CheckpointError(`${op}: cannot write checkpoint '${target}': ${errorMessage(error)}`, { cause: error });
  }
}

function checkUserMetadata(op: string, metadata: unknown): Record<string, string> {
  if (metadata === undefined) return {};
  if (!isPlainObject(metadata)) throw new CheckpointError(`${op}: 'options.metadata' must be an object of strings, got ${typeof metadata}`);
  for (const [key, value] of Object.entries(metadata)) {
    if (RESERVED_METADATA.includes(key)) {
      throw new CheckpointError(`${op}: 'options.metadata' key '${key}' is reserved for the kit (reserved: ${RESERVED_METADATA.join(', ')})`);
    }
    if (typeof value !== 'string') throw new CheckpointError(`${op}: 'options.metadata' value '${key}' must be a string, got ${typeof value}`);
  }
  return { ...(metadata as Record<string, string>) };
}

/** Every parameter as a float32 tensor in PyTorch layout, by official name. */
function checkpointTensors(model: DecoderLM): Record<string, SafetensorsInput> {
  const tensors: Record<string, SafetensorsInput> = {};
  for (const parameter of model.parameters()) {
    const { name, variable, transposed } = parameter;
    if (Object.prototype.hasOwnProperty.call(tensors, name)) throw new Error(`two parameters are named '${name}'`);
    if (variable.isDisposed) throw new Error(`parameter '${name}' has been disposed`);
    if (variable.dtype !== 'float32') throw new Error(`parameter '${name}' is ${variable.dtype}, expected float32`);
    if (transposed && variable.rank !== 2) throw new Error(`parameter '${name}' is marked transposed but has shape ${shapeText(variable.shape)}`);
    let data: Float32Array;
    if (transposed) {
      const pytorchLayout = tf.transpose(variable); // [out, in]
      data = pytorchLayout.dataSync() as Float32Array;
      pytorchLayout.dispose();
    } else {
      data = variable.dataSync() as Float32Array;
    }
    const shape = transposed ? [...variable.shape].reverse() : [...variable.shape];
    tensors[name] = { dtype: 'F32', shape, data };
  }
  return tensors;
}

/**
 * SHA-256 over the tensors in sorted name order: for each, the name, its shape and its float32 values
 * (little-endian bytes, as stored). Detects corrupted data that still parses.
 */
function tensorsSha256(tensors: ReadonlyMap<string, { readonly shape: readonly number[]; readonly data: Float32Array | Int32Array }>): string {
  const hash = createHash('sha256');
  const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  for (const name of [...tensors.keys()].sort()) {
    const tensor = tensors.get(name) as { readonly shape: readonly number[]; readonly data: Float32Array | Int32Array };
    hash.update(`${name}\n${shapeText(tensor.shape)}\n`);
    if (littleEndian) {
      hash.update(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
    } else {
      const bytes = new Uint8Array(tensor.data.byteLength);
      const view = new DataView(bytes.buffer);
      tensor.data.forEach((value, i) => view.setFloat32(4 * i, value, true));
      hash.update(bytes);
    }
  }
  return hash.digest('hex');
}

/** The version of this package, from its package.json (`'unknown'` when it cannot be found, e.g. in a bundle). */
async function readKitVersion(): Promise<string> {
  try {
    // src/io/ and dist/io/ are both two levels below the package root.
    const json: unknown = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8'));
    if (isPlainObject(json) && json.name === PACKAGE_NAME && typeof json.version === 'string') return json.version;
  } catch {
    // fall through
  }
  return 'unknown';
}

/** Writes a small text file and flushes it to disk. */
async function writeTextFile(path: string, text: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, 'wx');
    await handle.writeFile(text, 'utf8');
    await handle.sync();
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Flushes a directory's entries to disk; best effort (not every platform can open a directory). */
async function syncDirectory(directory: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(directory, 'r');
    await handle.sync();
  } catch {
    // The renames have happened; only their durability across a power cut is not guaranteed.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Renames the finished `staging` folder to `target`, moving an existing `target` aside first. */
async function swapIntoPlace(staging: string, target: string, token: string): Promise<void> {
  let existing;
  try {
    existing = await lstat(target);
  } catch (error) {
    if (!isNotFound(error)) throw error;
  }
  if (existing === undefined) {
    await rename(staging, target);
    await syncDirectory(dirname(target));
    return;
  }
  if (!existing.isDirectory()) {
    throw new Error(`'${target}' exists and is not a folder${existing.isSymbolicLink() ? ' (a symbolic link)' : ''}; refusing to replace it`);
  }
  const aside = join(dirname(target), `.${basename(target)}.${token}.old`);
  await rename(target, aside);
  try {
    await rename(staging, target);
  } catch (error) {
    await rename(aside, target).catch(() => undefined); // put the old checkpoint back
    throw error;
  }
  await syncDirectory(dirname(target));
  // The new checkpoint is in place; a failure to delete the old one only leaves a hidden folder behind.
  await rm(aside, { recursive: true, force: true }).catch(() => undefined);
}

// ---------------------------------------------------------------------------------------------------------
// Import

/** One tensor read from the checkpoint and the file it came from. */
interface SourcedTensor {
  readonly tensor: DecodedTensor;
  readonly file: string;
}

/**
 * Reads a checkpoint folder written by {@link exportCheckpoint} or by the official MoE++ code (Hugging
 * Face layout): `config.json` ({@link fromHfConfig}) and either `model.safetensors` or a sharded
 * `model.safetensors.index.json` with its shards. Tensors may be F32, F16, BF16 or F64 (converted to
 * float32). Rotary buffers (`…self_attn.rotary_emb.inv_freq` and the cos / sin caches) are ignored; with
 * tied embeddings an `lm_head.weight` equal to the embedding is ignored too. Every other tensor must be a
 * parameter of the model the config describes, and every parameter must be present. When the safetensors
 * metadata carries the kit's SHA-256 of the tensors (kit-written float32 files), it is verified.
 *
 * @param dir - the checkpoint folder
 * @returns a new model holding the checkpoint's weights (the caller disposes it)
 * @throws {@link CheckpointError} naming the file (and the tensor, where there is one) for: a missing
 *   folder, `config.json` or weights file; unreadable or malformed JSON or safetensors; a missing,
 *   unexpected, duplicated, mis-shaped (expected and actual shapes given in PyTorch layout), integer-typed
 *   or non-finite tensor; a tensor hash mismatch; a checkpoint format newer than this kit's
 * @throws {@link ConfigError} naming `config.json` and the field for an invalid config
 */
export async function importCheckpoint(dir: string): Promise<DecoderLM> {
  const op = 'importCheckpoint';
  if (typeof dir !== 'string' || dir.length === 0) throw new CheckpointError(`${op}: 'dir' must be a non-empty path, got ${JSON.stringify(dir)}`);
  const root = resolve(dir);
  let rootStat;
  try {
    rootStat = await stat(root);
  } catch (error) {
    throw new CheckpointError(`${op}: checkpoint folder '${root}' ${isNotFound(error) ? 'does not exist' : `cannot be read: ${errorMessage(error)}`}`, {
      cause: error,
    });
  }
  if (!rootStat.isDirectory()) throw new CheckpointError(`${op}: checkpoint '${root}' is not a folder`);

  const config = await readConfig(op, join(root, CONFIG_FILE));
  await checkKitFile(op, join(root, KIT_FILE));
  const { tensors, files } = await readWeights(op, root);
  checkEmbeddingShape(config, tensors, root);

  let model: DecoderLM | undefined;
  try {
    // In a tidy, so that any temporary the constructor leaves (e.g. a variable's initial value) is freed
    // whatever the layers do; variables and tf.keep-ed tensors survive a tidy.
    tf.tidy(() => {
      model = new DecoderLM(config, 0);
    });
  } catch (error) {
    throw new CheckpointError(`${op}: cannot build the model that '${join(root, CONFIG_FILE)}' describes: ${errorMessage(error)}`, { cause: error });
  }
  if (model === undefined) throw new CheckpointError(`${op}: cannot build the model that '${join(root, CONFIG_FILE)}' describes`);
  try {
    const plan = matchTensors(model, tensors, root);
    // Names, shapes and dtypes first (their errors say more), then the hash for corruption that parses.
    for (const file of files) checkTensorsHash(op, file.path, file.decoded);
    for (const { parameter, tensor } of plan) {
      tf.tidy(() => {
        const value = tf.tensor(tensor.data, tensor.shape, 'float32'); // PyTorch layout
        parameter.variable.assign(parameter.transposed ? tf.transpose(value) : value);
      });
    }
    return model;
  } catch (error) {
    model.dispose();
    if (error instanceof CheckpointError || error instanceof ConfigError) throw error;
    throw new CheckpointError(`${op}: cannot load '${root}': ${errorMessage(error)}`, { cause: error });
  }
}

/** Reads and validates `config.json`. */
async function readConfig(op: string, path: string): Promise<ModelConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const what = isNotFound(error) ? `missing ${CONFIG_FILE}` : `cannot read ${CONFIG_FILE}: ${errorMessage(error)}`;
    throw new CheckpointError(`${op}: ${what} ('${path}')`, { cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text.replace(/^\uFEFF/, ''));
  } catch (error) {
    throw new CheckpointError(`${op}: '${path}' is not valid JSON (${errorMessage(error)})`, { cause: error });
  }
  try {
    return fromHfConfig(json, path);
  } catch (error) {
    const message = errorMessage(error);
    throw new ConfigError(message.includes(path) ? `${op}: ${message}` : `${op}: ${path}: ${message}`, { cause: error });
  }
}

/** Checks `moepp_kit.json` when there is one: readable JSON, and a format this kit understands. */
async function checkKitFile(op: string, path: string): Promise<void> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (isNotFound(error)) return; // official checkpoints have none
    throw new CheckpointError(`${op}: cannot read '${path}': ${errorMessage(error)}`, { cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new CheckpointError(`${op}: '${path}' is not valid JSON (${errorMessage(error)})`, { cause: error });
  }
  if (!isPlainObject(json)) throw new CheckpointError(`${op}: '${path}' must hold a JSON object`);
  checkFormatVersion(op, path, 'format_version', json.format_version);
}

function checkFormatVersion(op: string, file: string, field: string, value: unknown): void {
  if (value === undefined) return;
  const version = typeof value === 'string' ? Number(value) : value;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) {
    throw new CheckpointError(`${op}: '${file}': '${field}' must be a positive integer, got ${JSON.stringify(value)}`);
  }
  if (version > CHECKPOINT_FORMAT_VERSION) {
    throw new CheckpointError(
      `${op}: '${file}': checkpoint format version ${version} is newer than this kit reads (${CHECKPOINT_FORMAT_VERSION}); update ${PACKAGE_NAME}`,
    );
  }
}

/** The weights of a checkpoint: every tensor by name, and the files they came from. */
interface CheckpointWeights {
  readonly tensors: Map<string, SourcedTensor>;
  readonly files: { readonly path: string; readonly decoded: DecodedSafetensors }[];
}

/** Reads `model.safetensors`, or the shards a `model.safetensors.index.json` lists. */
async function readWeights(op: string, root: string): Promise<CheckpointWeights> {
  const single = join(root, WEIGHTS_FILE);
  const indexPath = join(root, INDEX_FILE);
  if (await fileExists(op, single)) {
    const decoded = await readSafetensorsFile(single);
    checkFormatMetadata(op, single, decoded);
    return {
      tensors: new Map([...decoded.tensors].map(([name, tensor]) => [name, { tensor, file: single }])),
      files: [{ path: single, decoded }],
    };
  }
  if (!(await fileExists(op, indexPath))) {
    throw new CheckpointError(`${op}: missing ${WEIGHTS_FILE} in '${root}' (and no ${INDEX_FILE} for a sharded checkpoint)`);
  }
  const weightMap = await readIndex(op, indexPath);
  const shards = new Map<string, string[]>(); // shard file -> tensor names the index assigns to it
  for (const [name, shard] of weightMap) shards.set(shard, [...(shards.get(shard) ?? []), name]);
  const out = new Map<string, SourcedTensor>();
  const files: CheckpointWeights['files'] = [];
  for (const [shard, names] of shards) {
    const path = join(root, shard);
    if (!(await fileExists(op, path))) {
      throw new CheckpointError(`${op}: shard '${path}' listed in '${indexPath}' (e.g. for tensor '${names[0]}') is missing`);
    }
    const decoded = await readSafetensorsFile(path);
    checkFormatMetadata(op, path, decoded);
    files.push({ path, decoded });
    for (const [name, tensor] of decoded.tensors) {
      const listed = weightMap.get(name);
      if (listed !== shard) {
        throw new CheckpointError(
          `${op}: '${path}' holds tensor '${name}', which '${indexPath}' ${listed === undefined ? 'does not list' : `assigns to '${listed}'`}`,
        );
      }
      out.set(name, { tensor, file: path });
    }
    for (const name of names) {
      if (!decoded.tensors.has(name)) throw new CheckpointError(`${op}: '${path}' lacks tensor '${name}', which '${indexPath}' assigns to it`);
    }
  }
  return { tensors: out, files };
}

/** Whether a regular file exists; other errors than "not found" are {@link CheckpointError}s. */
async function fileExists(op: string, path: string): Promise<boolean> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new CheckpointError(`${op}: '${path}' is not a regular file`);
    return true;
  } catch (error) {
    if (isNotFound(error)) return false;
    if (error instanceof CheckpointError) throw error;
    throw new CheckpointError(`${op}: cannot read '${path}': ${errorMessage(error)}`, { cause: error });
  }
}

/** Parses a sharded checkpoint's index: `{ "weight_map": { "<tensor>": "<shard file>" } }`. */
async function readIndex(op: string, path: string): Promise<Map<string, string>> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (error) {
    throw new CheckpointError(`${op}: '${path}' is not valid JSON (${errorMessage(error)})`, { cause: error });
  }
  const weightMap = isPlainObject(json) ? json.weight_map : undefined;
  if (!isPlainObject(weightMap)) throw new CheckpointError(`${op}: '${path}' must hold { "weight_map": { "<tensor>": "<shard file>" } }`);
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    // A shard is a plain file name beside the index: no folders, so an index cannot point outside.
    if (typeof shard !== 'string' || shard.length === 0 || shard !== basename(shard) || shard === '.' || shard === '..' || shard.includes('\\')) {
      throw new CheckpointError(`${op}: '${path}': tensor '${name}' maps to ${JSON.stringify(shard)}, expected a file name in the same folder`);
    }
    out.set(name, shard);
  }
  if (out.size === 0) throw new CheckpointError(`${op}: '${path}': 'weight_map' lists no tensors`);
  return out;
}

/** Checks the kit's format version in a safetensors file's metadata, when present. */
function checkFormatMetadata(op: string, path: string, decoded: DecodedSafetensors): void {
  checkFormatVersion(op, path, `__metadata__.${META_FORMAT_VERSION}`, decoded.metadata[META_FORMAT_VERSION]);
}

/** Verifies the kit's SHA-256 of the tensors in a safetensors file, when its metadata has one. */
function checkTensorsHash(op: string, path: string, decoded: DecodedSafetensors): void {
  const expected = decoded.metadata[META_SHA256];
  if (expected === undefined) return;
  // The hash covers float32 data as written; a file converted to another dtype is not checked.
  if (![...decoded.tensors.values()].every((tensor) => tensor.dtype === 'F32')) return;
  const actual = tensorsSha256(decoded.tensors);
  if (actual !== expected) {
    throw new CheckpointError(
      `${op}: '${path}': the tensors' SHA-256 ${actual} differs from the ${expected} recorded when the file was written; the file is corrupted or was modified`,
    );
  }
}

/**
 * Fails early, before any weight is allocated (a corrupt config could describe a huge model), when the
 * embedding is missing or does not have the config's `[V, D]`.
 */
function checkEmbeddingShape(config: ModelConfig, tensors: ReadonlyMap<string, SourcedTensor>, root: string): void {
  const embedding = tensors.get('model.embed_tokens.weight');
  const expected = [config.vocabSize, config.hiddenSize];
  if (!embedding) {
    const files = [...new Set([...tensors.values()].map((t) => t.file))].join(', ') || join(root, WEIGHTS_FILE);
    throw new CheckpointError(`importCheckpoint: '${files}': missing tensor 'model.embed_tokens.weight' ${shapeText(expected)}`);
  }
  if (shapeText(embedding.tensor.shape) !== shapeText(expected)) {
    throw new CheckpointError(
      `importCheckpoint: '${embedding.file}': tensor 'model.embed_tokens.weight' has shape ${shapeText(embedding.tensor.shape)}, but '${join(root, CONFIG_FILE)}' (vocab_size, hidden_size) needs ${shapeText(expected)}`,
    );
  }
}

/** Pairs every parameter with its tensor, checking names, dtypes, shapes and values; assigns nothing. */
function matchTensors(
  model: DecoderLM,
  tensors: ReadonlyMap<string, SourcedTensor>,
  root: string,
): { parameter: NamedParameter; tensor: { readonly data: Float32Array; readonly shape: number[] } }[] {
  const op = 'importCheckpoint';
  const parameters = new Map<string, NamedParameter>();
  for (const parameter of model.parameters()) parameters.set(parameter.name, parameter);
  const weightsName = tensors.size > 0 ? [...new Set([...tensors.values()].map((t) => t.file))].join(', ') : join(root, WEIGHTS_FILE);

  const unexpected: string[] = [];
  for (const [name, { tensor, file }] of tensors) {
    if (parameters.has(name)) continue;
    if (IGNORED_TENSOR.test(name)) continue;
    if (name === 'lm_head.weight' && model.config.tieEmbeddings) {
      checkTiedHead(tensor, tensors.get('model.embed_tokens.weight')?.tensor, file);
      continue;
    }
    unexpected.push(`'${name}' ${shapeText(tensor.shape)}`);
  }
  if (unexpected.length > 0) {
    throw new CheckpointError(
      `${op}: '${weightsName}': unexpected tensor${unexpected.length > 1 ? 's' : ''} ${listed(unexpected)}, which the model described by '${join(root, CONFIG_FILE)}' has no parameter for`,
    );
  }

  const missing: string[] = [];
  const plan: { parameter: NamedParameter; tensor: { readonly data: Float32Array; readonly shape: number[] } }[] = [];
  for (const [name, parameter] of parameters) {
    const expectedShape = parameter.transposed ? [...parameter.variable.shape].reverse() : [...parameter.variable.shape];
    const sourced = tensors.get(name);
    if (!sourced) {
      missing.push(`'${name}' ${shapeText(expectedShape)}`);
      continue;
    }
    const { tensor, file } = sourced;
    const where = `${op}: '${file}': tensor '${name}'`;
    if (tensor.data instanceof Int32Array || !(tensor.data instanceof Float32Array)) {
      throw new CheckpointError(`${where} has integer dtype ${tensor.dtype}; a float tensor (F32, F16, BF16 or F64) is needed`);
    }
    if (shapeText(tensor.shape) !== shapeText(expectedShape)) {
      throw new CheckpointError(`${where} has shape ${shapeText(tensor.shape)}, expected ${shapeText(expectedShape)} (PyTorch layout${parameter.transposed ? ', nn.Linear [out, in]' : ''})`);
    }
    const bad = tensor.data.findIndex((value) => !Number.isFinite(value));
    if (bad >= 0) throw new CheckpointError(`${where} holds a non-finite value (${tensor.data[bad]} at element ${bad})`);
    plan.push({ parameter, tensor: { data: tensor.data, shape: tensor.shape } });
  }
  if (missing.length > 0) {
    throw new CheckpointError(
      `${op}: '${weightsName}': missing tensor${missing.length > 1 ? 's' : ''} ${listed(missing)} (expected PyTorch shape given), which '${join(root, CONFIG_FILE)}' calls for`,
    );
  }
  return plan;
}

/** With tied embeddings, an `lm_head.weight` in the file must equal the embedding it is tied to. */
function checkTiedHead(head: DecodedTensor, embedding: DecodedTensor | undefined, file: string): void {
  const same =
    embedding !== undefined &&
    shapeText(head.shape) === shapeText(embedding.shape) &&
    head.data.length === embedding.data.length &&
    head.data.every((value, i) => Object.is(value, embedding.data[i]));
  if (!same) {
    throw new CheckpointError(
      `importCheckpoint: '${file}': tensor 'lm_head.weight' differs from 'model.embed_tokens.weight', but the config ties them (tie_word_embeddings: true)`,
    );
  }
}

function listed(items: readonly string[]): string {
  const shown = items.slice(0, MAX_LISTED).join(', ');
  return items.length > MAX_LISTED ? `${shown} and ${items.length - MAX_LISTED} more` : shown;
}
