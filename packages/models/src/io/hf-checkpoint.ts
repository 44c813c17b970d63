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
 *
 * The pieces are public for other checkpoint writers (the trainer's checkpoints hold the same
 * `config.json` and `model.safetensors`): {@link torchShape}, {@link toTorchLayout} and
 * {@link fromTorchLayout} convert between the kit's layout and PyTorch's; {@link modelToSafetensors} and
 * {@link matchModelWeights} / {@link assignModelWeights} are the two directions of `model.safetensors`.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@moepp/tensors-core';
import { DecoderLM } from '../decoder.js';
import type { ModelConfig } from '../config.js';
import type { NamedParameter } from '../parameters.js';
import { replaceFolderAtomically, writeFileSynced } from './atomic.js';
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
 * The folder is replaced as a whole ({@link replaceFolderAtomically}): the files are written and flushed in
 * a hidden staging sibling (`.<name>.<pid>.<random>.tmp`); an existing folder is renamed to
 * `<dir>.previous`, the staging folder renamed into place and `<dir>.previous` deleted. `dir` never holds
 * a partial checkpoint: if anything fails the staging folder is removed and an existing checkpoint is left
 * (or put back) in place, and after a crash between the two renames the old checkpoint is complete in
 * `<dir>.previous`. Missing parent folders are created. Everything else in an existing `dir` (e.g. a
 * tokenizer) is replaced too.
 *
 * @param model - the model to save (not modified)
 * @param dir - the checkpoint folder
 * @param options - extra safetensors metadata
 * @returns when the folder is in place
 * @throws {@link CheckpointError} naming `dir` when the model's parameters cannot be read (duplicate names,
 *   disposed or non-float32 variables), the metadata is invalid, `dir` or `<dir>.previous` exists but is
 *   not a folder, or a file cannot be written; the underlying error is the `cause`
 */
export async function exportCheckpoint(model: DecoderLM, dir: string, options: ExportCheckpointOptions = {}): Promise<void> {
  const op = 'exportCheckpoint';
  if (!(model instanceof DecoderLM)) throw new CheckpointError(`${op}: 'model' must be a DecoderLM, got ${typeof model}`);
  if (typeof dir !== 'string' || dir.length === 0) throw new CheckpointError(`${op}: 'dir' must be a non-empty path, got ${JSON.stringify(dir)}`);
  const target = resolve(dir);
  const userMetadata = checkUserMetadata(op, options.metadata);
  try {
    const tensors = modelToSafetensors(model); // PyTorch layout, read before anything touches the disk
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
    await replaceFolderAtomically(target, async (staging) => {
      await writeSafetensorsFile(join(staging, WEIGHTS_FILE), tensors, metadata);
      await writeFileSynced(join(staging, CONFIG_FILE), `${JSON.stringify(toHfConfig(model.config), null, 2)}\n`);
      await writeFileSynced(join(staging, KIT_FILE), `${JSON.stringify(kitInfo, null, 2)}\n`);
    });
  } catch (error) {
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

// ---------------------------------------------------------------------------------------------------------
// PyTorch layout and model.safetensors

/**
 * The PyTorch shape of a parameter: its variable's shape, reversed for an `nn.Linear` weight (marked
 * `transposed`: the kit stores `[in, out]`, PyTorch `[out, in]`).
 *
 * @param parameter - a named parameter of a model
 * @returns the shape in PyTorch layout
 * @throws {@link CheckpointError} naming the parameter when it is marked transposed but is not rank 2
 */
export function torchShape(parameter: NamedParameter): number[] {
  const shape = [...parameter.variable.shape];
  if (!parameter.transposed) return shape;
  if (shape.length !== 2) {
    throw new CheckpointError(`torchShape: parameter '${parameter.name}' is marked transposed but has shape ${shapeText(shape)}; only a rank-2 weight can be`);
  }
  return [shape[1] as number, shape[0] as number];
}

/**
 * Converts a parameter's values from the kit's layout to PyTorch's (transposes an `nn.Linear` weight).
 *
 * @param parameter - the parameter the values belong to (its shape and `transposed` flag are used)
 * @param data - float32, row-major, the variable's shape (kit layout), e.g. `[in, out]`
 * @returns a new array: float32, row-major, {@link torchShape} (PyTorch layout), e.g. `[out, in]`
 * @throws {@link CheckpointError} naming the parameter when `data` is not a `Float32Array` of the
 *   variable's size, or the parameter is marked transposed but is not rank 2
 */
export function toTorchLayout(parameter: NamedParameter, data: Float32Array): Float32Array {
  return relayout('toTorchLayout', parameter, data, 'toTorch');
}

/**
 * Converts a parameter's values from PyTorch's layout to the kit's (the inverse of {@link toTorchLayout}).
 *
 * @param parameter - the parameter the values belong to (its shape and `transposed` flag are used)
 * @param data - float32, row-major, {@link torchShape} (PyTorch layout), e.g. `[out, in]`
 * @returns a new array: float32, row-major, the variable's shape (kit layout), e.g. `[in, out]`
 * @throws {@link CheckpointError} naming the parameter when `data` is not a `Float32Array` of the
 *   variable's size, or the parameter is marked transposed but is not rank 2
 */
export function fromTorchLayout(parameter: NamedParameter, data: Float32Array): Float32Array {
  return relayout('fromTorchLayout', parameter, data, 'fromTorch');
}

function relayout(op: string, parameter: NamedParameter, data: Float32Array, direction: 'toTorch' | 'fromTorch'): Float32Array {
  const torch = torchShape(parameter);
  const size = torch.reduce((a, b) => a * b, 1);
  if (!(data instanceof Float32Array) || data.length !== size) {
    const got = data instanceof Float32Array ? `${data.length} values` : `a ${(data as unknown as object | null)?.constructor?.name ?? typeof data}`;
    throw new CheckpointError(`${op}: parameter '${parameter.name}' of shape ${shapeText(parameter.variable.shape)} needs a Float32Array of ${size} values, got ${got}`);
  }
  if (!parameter.transposed) return data.slice();
  // Transposes a row-major [rows, columns] matrix: kit [in, out] -> PyTorch [out, in], or back.
  const [rows, columns] = direction === 'toTorch' ? [torch[1] as number, torch[0] as number] : [torch[0] as number, torch[1] as number];
  const out = new Float32Array(size);
  for (let r = 0; r < rows; r++) for (let c = 0; c < columns; c++) out[c * rows + r] = data[r * columns + c] as number;
  return out;
}

/**
 * Every parameter of a model as a float32 tensor in PyTorch layout under its official name: the
 * content of a checkpoint's `model.safetensors` (see the module notes for the names and shapes).
 *
 * @param model - the model (not modified)
 * @returns tensors by official name, for {@link writeSafetensorsFile} or {@link encodeSafetensors}
 * @throws {@link CheckpointError} naming the parameter when two parameters share a name, or one has been
 *   disposed, is not float32, or is marked transposed but is not rank 2
 */
export function modelToSafetensors(model: DecoderLM): Record<string, SafetensorsInput> {
  const op = 'modelToSafetensors';
  if (typeof (model as Partial<DecoderLM> | null)?.parameters !== 'function') {
    throw new CheckpointError(`${op}: 'model' must be a DecoderLM, got ${typeof model}`);
  }
  const tensors: Record<string, SafetensorsInput> = {};
  for (const parameter of model.parameters()) {
    const { name, variable } = parameter;
    if (Object.prototype.hasOwnProperty.call(tensors, name)) throw new CheckpointError(`${op}: two parameters are named '${name}'`);
    if (variable.isDisposed) throw new CheckpointError(`${op}: parameter '${name}' has been disposed`);
    if (variable.dtype !== 'float32') throw new CheckpointError(`${op}: parameter '${name}' is ${variable.dtype}, expected float32`);
    tensors[name] = { dtype: 'F32', shape: torchShape(parameter), data: toTorchLayout(parameter, variable.dataSync() as Float32Array) };
  }
  return tensors;
}

/** One parameter and the checked value it is to take (from {@link matchModelWeights}). */
export interface ModelWeight {
  /** The parameter to assign. */
  readonly parameter: NamedParameter;
  /** The value: float32, row-major, PyTorch layout ({@link torchShape}), every element finite. */
  readonly data: Float32Array;
}

/** Options of {@link matchModelWeights}. */
export interface MatchModelWeightsOptions {
  /**
   * Ignore what official checkpoints may hold besides the parameters: the rotary buffers of each
   * attention layer (`…self_attn.rotary_emb.inv_freq`, `…cos_cached`, `…sin_cached`, recomputed from
   * `rope_theta`) and, when the model ties its embeddings, an `lm_head.weight` equal to
   * `model.embed_tokens.weight` (one that differs is an error). Default `false`: every tensor must be a
   * parameter. {@link importCheckpoint} sets it.
   */
  readonly officialExtras?: boolean;
}

/**
 * Checks decoded safetensors against a model's parameters and pairs each parameter with its value,
 * assigning nothing (see {@link assignModelWeights}). Checked: every parameter has a tensor and every
 * tensor is a parameter (`options.officialExtras` aside), then per tensor a float dtype (F32, F16, BF16
 * or F64), the PyTorch shape ({@link torchShape}) and finite values.
 *
 * @param model - the model whose parameters are matched (not modified)
 * @param decoded - the file's content, e.g. from {@link readSafetensorsFile}
 * @param source - the file, named in every error
 * @param options - see {@link MatchModelWeightsOptions}
 * @returns one entry per parameter, in `model.parameters()` order
 * @throws {@link CheckpointError} naming `source` and the tensors: missing tensors (with the expected
 *   PyTorch shape), unexpected tensors, an integer dtype, another shape, a non-finite value (with its
 *   index), a tied `lm_head.weight` that differs from the embedding; or for arguments of the wrong type
 */
export function matchModelWeights(
  model: DecoderLM,
  decoded: DecodedSafetensors,
  source: string,
  options: MatchModelWeightsOptions = {},
): ModelWeight[] {
  const op = 'matchModelWeights';
  if (typeof (model as Partial<DecoderLM> | null)?.parameters !== 'function') {
    throw new CheckpointError(`${op}: 'model' must be a DecoderLM, got ${typeof model}`);
  }
  if (!((decoded as Partial<DecodedSafetensors> | null)?.tensors instanceof Map)) {
    throw new CheckpointError(`${op}: 'decoded' must be decoded safetensors ({ tensors: Map, metadata }), got ${typeof decoded}`);
  }
  if (typeof source !== 'string' || source.length === 0) throw new CheckpointError(`${op}: 'source' must be a non-empty file name, got ${JSON.stringify(source)}`);
  const tensors = new Map([...decoded.tensors].map(([name, tensor]) => [name, { tensor, file: source }]));
  return matchWeights(op, model, tensors, source, { officialExtras: options.officialExtras === true });
}

/**
 * Assigns checked weights to their parameters, converting each value back to the kit's layout
 * ({@link fromTorchLayout}). Every value's size is checked before the first assignment, so a bad entry
 * changes nothing.
 *
 * @param weights - from {@link matchModelWeights}
 * @returns when every parameter holds its new value
 * @throws {@link CheckpointError} naming the parameter when a value does not have its variable's size
 *   or the variable has been disposed (possible only for weights not made by {@link matchModelWeights})
 */
export function assignModelWeights(weights: readonly ModelWeight[]): void {
  const op = 'assignModelWeights';
  for (const { parameter, data } of weights) {
    const size = parameter.variable.shape.reduce((a, b) => a * b, 1);
    if (parameter.variable.isDisposed) throw new CheckpointError(`${op}: parameter '${parameter.name}' has been disposed`);
    if (!(data instanceof Float32Array) || data.length !== size) {
      throw new CheckpointError(`${op}: the value of parameter '${parameter.name}' must be a Float32Array of ${size} values`);
    }
  }
  for (const { parameter, data } of weights) {
    const values = fromTorchLayout(parameter, data); // kit layout, the variable's shape
    tf.tidy(() => parameter.variable.assign(tf.tensor(values, parameter.variable.shape, 'float32')));
  }
}

/** One tensor read from a checkpoint and the file it came from. */
interface SourcedTensor {
  readonly tensor: DecodedTensor;
  readonly file: string;
}

/**
 * The checks of {@link matchModelWeights} over tensors that may come from several files (shards).
 *
 * @param fallbackSource - the file named when no tensor names one (an empty file)
 * @param context.modelSource - what describes the model (its config.json), named in "missing" / "unexpected"
 */
function matchWeights(
  op: string,
  model: DecoderLM,
  tensors: ReadonlyMap<string, SourcedTensor>,
  fallbackSource: string,
  context: { readonly officialExtras: boolean; readonly modelSource?: string },
): ModelWeight[] {
  const parameters = new Map<string, NamedParameter>();
  for (const parameter of model.parameters()) parameters.set(parameter.name, parameter);
  const files = tensors.size > 0 ? [...new Set([...tensors.values()].map((t) => t.file))].join(', ') : fallbackSource;
  const theModel = context.modelSource === undefined ? 'the model' : `the model described by '${context.modelSource}'`;

  // Names first: a missing or unexpected tensor usually means another model, which says more than a shape.
  const missing = [...parameters.values()].filter((p) => !tensors.has(p.name)).map((p) => `'${p.name}' ${shapeText(torchShape(p))}`);
  if (missing.length > 0) {
    throw new CheckpointError(
      `${op}: ${files}: ${missing.length} model parameter tensor(s) are missing, e.g. ${listed(missing)} (each missing tensor with the PyTorch shape ${theModel} expects)`,
    );
  }
  const unexpected: string[] = [];
  for (const [name, { tensor, file }] of tensors) {
    if (parameters.has(name)) continue;
    if (context.officialExtras && IGNORED_TENSOR.test(name)) continue;
    if (context.officialExtras && name === 'lm_head.weight' && model.config.tieEmbeddings) {
      checkTiedHead(op, tensor, tensors.get('model.embed_tokens.weight')?.tensor, file);
      continue;
    }
    unexpected.push(`'${name}' ${shapeText(tensor.shape)}`);
  }
  if (unexpected.length > 0) {
    throw new CheckpointError(`${op}: ${files}: ${unexpected.length} unexpected tensor(s) ${listed(unexpected)}, which ${theModel} has no parameter for`);
  }

  const weights: ModelWeight[] = [];
  for (const [name, parameter] of parameters) {
    const { tensor, file } = tensors.get(name) as SourcedTensor;
    const where = `${op}: ${file}: tensor '${name}'`;
    if (!(tensor.data instanceof Float32Array)) {
      throw new CheckpointError(`${where} has integer dtype ${tensor.dtype}; a float tensor (F32, F16, BF16 or F64) is needed`);
    }
    const expectedShape = torchShape(parameter);
    if (shapeText(tensor.shape) !== shapeText(expectedShape)) {
      throw new CheckpointError(
        `${where} has shape ${shapeText(tensor.shape)}, expected ${shapeText(expectedShape)} (PyTorch layout${parameter.transposed ? ', nn.Linear [out, in]' : ''})`,
      );
    }
    const bad = tensor.data.findIndex((value) => !Number.isFinite(value));
    if (bad >= 0) throw new CheckpointError(`${where} holds a non-finite value (${tensor.data[bad]} at element ${bad})`);
    weights.push({ parameter, data: tensor.data });
  }
  return weights;
}

/** With tied embeddings, an `lm_head.weight` in the file must equal the embedding it is tied to. */
function checkTiedHead(op: string, head: DecodedTensor, embedding: DecodedTensor | undefined, file: string): void {
  const same =
    embedding !== undefined &&
    shapeText(head.shape) === shapeText(embedding.shape) &&
    head.data.length === embedding.data.length &&
    head.data.every((value, i) => Object.is(value, embedding.data[i]));
  if (!same) {
    throw new CheckpointError(
      `${op}: ${file}: tensor 'lm_head.weight' differs from 'model.embed_tokens.weight', but the config ties them (tie_word_embeddings: true)`,
    );
  }
}

function listed(items: readonly string[]): string {
  const shown = items.slice(0, MAX_LISTED).join(', ');
  return items.length > MAX_LISTED ? `${shown} and ${items.length - MAX_LISTED} more` : shown;
}

// ---------------------------------------------------------------------------------------------------------
// Import

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
 * @throws `ConfigError` naming `config.json` and the field for an invalid config
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
    const weights = matchWeights(op, model, tensors, join(root, WEIGHTS_FILE), { officialExtras: true, modelSource: join(root, CONFIG_FILE) });
    // Names, shapes and dtypes first (their errors say more), then the hash for corruption that parses.
    for (const file of files) checkTensorsHash(op, file.path, file.decoded);
    assignModelWeights(weights);
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
