/**
 * Training checkpoints: one folder holding everything a run needs to continue exactly where it stopped.
 *
 * ```
 * <dir>/
 *   config.json             the model config in the official MoE++ Hugging Face layout (toHfConfig)
 *   model.safetensors       every model weight under its official name, PyTorch layout ([out, in]), F32
 *   optimizer.safetensors   AdamW moments `<name>.exp_avg`, `<name>.exp_avg_sq` (same names and layout), F32
 *   trainer-state.json      step, generator state, data cursor, trainer config, loss / eval history, format version
 * ```
 *
 * `config.json` + `model.safetensors` are the Hugging Face checkpoint of the model, written and read by
 * the same code as `exportCheckpoint` / `importCheckpoint` (`modelToSafetensors`, `matchModelWeights`),
 * so the folder also loads wherever an exported model does. `trainer-state.json` is written last.
 *
 * Atomic as a whole (`replaceFolderAtomically` from `@moepp/models`): the new checkpoint is written to a
 * hidden staging sibling (`.<name>.<pid>.<random>.tmp`), every file flushed to disk; then the current
 * `<dir>` is renamed to `<dir>.previous`, the staging folder to `<dir>`, and only then is
 * `<dir>.previous` deleted. At every instant either `<dir>` or `<dir>.previous` is a complete
 * checkpoint; {@link resolveCheckpointDir} finds it after a crash.
 *
 * Loading validates everything (JSON, format version, model config, every tensor's presence, dtype,
 * shape and, for the weights, finite values; no extra tensors) before it assigns anything, and every
 * error names the file.
 */
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ConfigError, SeededRandom, type RandomState } from '@moepp/tensors-core';
import {
  CheckpointError,
  assignModelWeights,
  fromHfConfig,
  fromTorchLayout,
  matchModelWeights,
  modelToSafetensors,
  previousFolderPath,
  readSafetensorsFile,
  replaceFolderAtomically,
  toHfConfig,
  toTorchLayout,
  torchShape,
  writeFileSynced,
  writeSafetensorsFile,
  type DecoderLM,
  type ModelConfig,
  type NamedParameter,
  type SafetensorsInput,
} from '@moepp/models';
import type { BatchCursor } from '@moepp/data';
import type { AdamW, NamedArray } from './adamw.js';
import { resolveTrainConfig, type TrainConfig } from './config.js';
import type { EvalRecord } from './metrics.js';

/** The `format` field of `trainer-state.json`. */
export const TRAINER_STATE_FORMAT = 'moepp-trainer-state';

/** The version of the checkpoint layout this code writes and reads. */
export const TRAINER_STATE_VERSION = 1;

/** The files of a checkpoint folder. */
export const CHECKPOINT_FILES = Object.freeze({
  /** The model config, official Hugging Face names. */
  config: 'config.json',
  /** The model weights, official names, PyTorch layout. */
  model: 'model.safetensors',
  /** The AdamW moments. */
  optimizer: 'optimizer.safetensors',
  /** Everything else: {@link TrainerState}. */
  state: 'trainer-state.json',
});

/** The batching a checkpoint's data cursor belongs to. */
export interface CheckpointData {
  /** B, windows per micro-batch. */
  readonly batchSize: number;
  /** T, input tokens per window. */
  readonly seqLen: number;
  /** Windows in the training stream (a different corpus or split almost surely differs here). */
  readonly windowCount: number;
}

/** A checkpoint's trainer state and the folder it was read from. */
export interface LoadedCheckpoint {
  /** The validated `trainer-state.json`. */
  readonly state: TrainerState;
  /** The folder read: the one asked for, or its `.previous` after an interrupted replacement. */
  readonly dir: string;
}

/** Why a checkpoint was written. */
export type CheckpointReason = 'interval' | 'final' | 'interrupt' | 'stop' | 'manual';

/** The history a resumed run carries on. */
export interface TrainHistory {
  /** Total loss of every step so far; `losses[s − 1]` is step s's. */
  readonly losses: readonly number[];
  /** Every evaluation so far. */
  readonly evals: readonly EvalRecord[];
}

/** The content of `trainer-state.json`. */
export interface TrainerState {
  /** Always {@link TRAINER_STATE_FORMAT}. */
  readonly format: typeof TRAINER_STATE_FORMAT;
  /** {@link TRAINER_STATE_VERSION} when written. */
  readonly version: number;
  /** Optimiser steps completed. */
  readonly step: number;
  /** Why it was written. */
  readonly reason: CheckpointReason;
  /** Wall-clock time of writing, ISO 8601. */
  readonly savedAt: string;
  /** The trainer's generator state (`SeededRandom.getState`). */
  readonly rngState: RandomState;
  /** Where the training batches continue (`TrainBatcher.getCursor`). */
  readonly dataCursor: BatchCursor;
  /** The batching the cursor belongs to. */
  readonly data: CheckpointData;
  /** The trainer config of the run. */
  readonly config: TrainConfig;
  /** Loss and eval history. */
  readonly history: TrainHistory;
  /** Official names of the trained (not frozen) parameters, which have optimiser state. */
  readonly trainableParameters: readonly string[];
}

/** What {@link writeCheckpoint} saves. */
export interface CheckpointContents {
  /** The model (all its weights are saved). */
  readonly model: DecoderLM;
  /** The optimiser, or null to save no optimiser state. */
  readonly optimizer: AdamW | null;
  /** The trainer state. */
  readonly state: TrainerState;
}

/**
 * @param dir - a folder
 * @returns true if it holds a checkpoint's `trainer-state.json`
 */
export function isCheckpointDir(dir: string): boolean {
  return existsSync(join(dir, CHECKPOINT_FILES.state));
}

/**
 * Finds the complete checkpoint for a checkpoint path: `<dir>` itself, or `<dir>.previous` when a
 * crash interrupted a replacement between its two renames.
 *
 * @param dir - the checkpoint folder
 * @returns the folder to read, or null when neither holds a checkpoint
 */
export function resolveCheckpointDir(dir: string): string | null {
  if (isCheckpointDir(dir)) return dir;
  const previous = previousFolderPath(dir);
  if (!existsSync(dir) && isCheckpointDir(previous)) return previous;
  return null;
}

/**
 * Writes a checkpoint folder atomically (see the module notes): `<dir>` is replaced only once the new
 * checkpoint is complete on disk.
 *
 * @param dir - the checkpoint folder; its parent is created if needed
 * @param contents - model, optimiser and trainer state
 * @returns when the new checkpoint is in place
 * @throws `CheckpointError` naming the folder when `<dir>` exists but is not a checkpoint (it is
 *   never replaced then), when `<dir>` or `<dir>.previous` is a file or a symbolic link, or when
 *   writing fails (the previous checkpoint is left in place); the underlying error is the `cause`
 */
export async function writeCheckpoint(dir: string, contents: CheckpointContents): Promise<void> {
  const target = resolve(dir);
  if (existsSync(target) && !(statSync(target).isDirectory() && isCheckpointDir(target))) {
    throw new CheckpointError(`writeCheckpoint: '${target}' exists and is not a checkpoint folder; refusing to replace it`);
  }
  try {
    // Every tensor is read before anything touches the disk.
    const modelTensors = modelToSafetensors(contents.model);
    const optimizerState = contents.optimizer ? optimizerTensors(contents.model, contents.optimizer) : null;
    await replaceFolderAtomically(target, async (staging) => {
      await writeSafetensorsFile(join(staging, CHECKPOINT_FILES.model), modelTensors, { format: 'pt' });
      if (optimizerState) {
        await writeSafetensorsFile(join(staging, CHECKPOINT_FILES.optimizer), optimizerState.tensors, {
          format: 'pt',
          optimizer: 'AdamW',
          step: String(optimizerState.step),
        });
      }
      await writeFileSynced(join(staging, CHECKPOINT_FILES.config), `${JSON.stringify(toHfConfig(contents.model.config), null, 2)}\n`);
      await writeFileSynced(join(staging, CHECKPOINT_FILES.state), `${JSON.stringify(contents.state, null, 1)}\n`);
    });
  } catch (error) {
    throw new CheckpointError(`writeCheckpoint: cannot write '${target}': ${(error as Error).message}`, { cause: error });
  }
}

/** The AdamW moments as safetensors tensors: `<name>.exp_avg(_sq)`, in their parameter's PyTorch layout. */
function optimizerTensors(model: DecoderLM, optimizer: AdamW): { step: number; tensors: Record<string, SafetensorsInput> } {
  const exported = optimizer.exportState();
  const byName = new Map(model.parameters().map((p) => [p.name, p]));
  const tensors: Record<string, SafetensorsInput> = {};
  for (const [key, array] of exported.tensors) {
    const parameter = byName.get(key.replace(/\.exp_avg(_sq)?$/, ''));
    if (!parameter) throw new ConfigError(`writeCheckpoint: optimizer tensor '${key}' belongs to no model parameter`);
    tensors[key] = { dtype: 'F32', shape: torchShape(parameter), data: toTorchLayout(parameter, array.data) };
  }
  return { step: exported.step, tensors };
}

function fail(path: string, message: string, cause?: unknown): never {
  throw new CheckpointError(`${path}: ${message}`, cause === undefined ? undefined : { cause });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkInteger(path: string, field: string, value: unknown, min = 0): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    fail(path, `'${field}' must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * Reads and validates a checkpoint's `trainer-state.json`.
 *
 * @param dir - the checkpoint folder (or `<dir>.previous` is used, see {@link resolveCheckpointDir})
 * @returns the state and the folder it came from
 * @throws `CheckpointError` naming the file when it is missing, not JSON, of another format or a
 *   newer version, or a field is missing or malformed
 */
export async function readTrainerState(dir: string): Promise<LoadedCheckpoint> {
  const found = resolveCheckpointDir(resolve(dir));
  const folder = found ?? resolve(dir);
  const path = join(folder, CHECKPOINT_FILES.state);
  if (found === null) fail(path, 'no checkpoint here (the file does not exist)');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    fail(path, `cannot read: ${(error as Error).message}`, error);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    fail(path, `is not valid JSON (${(error as Error).message})`, error);
  }
  if (!isRecord(json)) fail(path, 'must hold a JSON object');
  if (json.format !== TRAINER_STATE_FORMAT) fail(path, `'format' must be '${TRAINER_STATE_FORMAT}', got ${JSON.stringify(json.format)}`);
  const version = checkInteger(path, 'version', json.version, 1);
  if (version > TRAINER_STATE_VERSION) {
    fail(path, `was written by a newer version of @moepp/trainers (format version ${version}; this one reads ${TRAINER_STATE_VERSION})`);
  }
  const step = checkInteger(path, 'step', json.step);
  try {
    SeededRandom.fromState(json.rngState as RandomState);
  } catch (error) {
    fail(path, `'rngState' is malformed: ${(error as Error).message}`, error);
  }
  if (!isRecord(json.dataCursor)) fail(path, `'dataCursor' must be an object, got ${JSON.stringify(json.dataCursor)}`);
  if (!isRecord(json.data)) fail(path, `'data' must be an object, got ${JSON.stringify(json.data)}`);
  checkInteger(path, 'data.batchSize', json.data.batchSize, 1);
  checkInteger(path, 'data.seqLen', json.data.seqLen, 1);
  checkInteger(path, 'data.windowCount', json.data.windowCount, 1);
  let config: TrainConfig;
  try {
    config = resolveTrainConfig(json.config as TrainConfig);
  } catch (error) {
    fail(path, `'config' is invalid: ${(error as Error).message}`, error);
  }
  const history = json.history;
  if (!isRecord(history) || !Array.isArray(history.losses) || !Array.isArray(history.evals)) {
    fail(path, `'history' must be { losses: number[], evals: object[] }`);
  }
  if (history.losses.length !== step || history.losses.some((v) => typeof v !== 'number')) {
    fail(path, `'history.losses' must hold ${step} numbers (one per step), got ${history.losses.length} entries`);
  }
  const names = json.trainableParameters;
  if (!Array.isArray(names) || names.some((n) => typeof n !== 'string')) fail(path, `'trainableParameters' must be an array of names`);
  return { state: { ...(json as unknown as TrainerState), config }, dir: folder };
}

function modelConfigDifferences(saved: ModelConfig, given: ModelConfig): string[] {
  const flatten = (value: unknown, prefix: string, out: Map<string, string>) => {
    if (isRecord(value)) for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
    else out.set(prefix, JSON.stringify(value));
    return out;
  };
  const a = flatten(saved, '', new Map());
  const b = flatten(given, '', new Map());
  const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
  return keys.filter((k) => a.get(k) !== b.get(k)).map((k) => `${k}: ${a.get(k) ?? 'absent'} in the checkpoint, ${b.get(k) ?? 'absent'} in the model`);
}

/**
 * Checks that a checkpoint's `config.json` describes the same model as `model.config`.
 *
 * @param dir - the checkpoint folder (as found by {@link resolveCheckpointDir})
 * @param model - the model to compare with
 * @returns when they agree
 * @throws `CheckpointError` naming `config.json` when it cannot be read or parsed, or listing every
 *   field that differs
 */
export async function checkCheckpointModel(dir: string, model: DecoderLM): Promise<void> {
  const configPath = join(dir, CHECKPOINT_FILES.config);
  let savedConfig: ModelConfig;
  try {
    savedConfig = fromHfConfig(JSON.parse(await readFile(configPath, 'utf8')), configPath);
  } catch (error) {
    fail(configPath, `cannot be read as a model config: ${(error as Error).message}`, error);
  }
  const differences = modelConfigDifferences(savedConfig, model.config);
  if (differences.length > 0) {
    fail(configPath, `the checkpoint's model differs from the model to load into: ${differences.join('; ')}`);
  }
}

/**
 * Checks a decoded `optimizer.safetensors` against the moments the optimiser expects and converts them
 * to kit-layout arrays.
 *
 * @param expected - per moment name (`<parameter>.exp_avg` / `.exp_avg_sq`), the parameter it belongs to
 * @returns per expected tensor name, the kit-layout array
 */
function matchOptimizerTensors(
  path: string,
  tensors: ReadonlyMap<string, { dtype: string; shape: number[]; data: Float32Array | Int32Array }>,
  expected: ReadonlyMap<string, NamedParameter>,
): Map<string, NamedArray> {
  const out = new Map<string, NamedArray>();
  const missing = [...expected.keys()].filter((name) => !tensors.has(name));
  if (missing.length > 0) {
    fail(path, `${missing.length} optimiser tensor(s) are missing, e.g. '${missing.slice(0, 3).join("', '")}'`);
  }
  const extra = [...tensors.keys()].filter((name) => !expected.has(name));
  if (extra.length > 0) {
    fail(path, `${extra.length} tensor(s) match no optimiser of this model, e.g. '${extra.slice(0, 3).join("', '")}'`);
  }
  for (const [name, parameter] of expected) {
    const tensor = tensors.get(name) as { dtype: string; shape: number[]; data: Float32Array | Int32Array };
    const shape = torchShape(parameter);
    if (!(tensor.data instanceof Float32Array)) fail(path, `tensor '${name}' must be a float tensor, got ${tensor.dtype}`);
    if (tensor.shape.length !== shape.length || tensor.shape.some((d, i) => d !== shape[i])) {
      fail(path, `tensor '${name}' must have shape [${shape.join(', ')}], got [${tensor.shape.join(', ')}]`);
    }
    out.set(name, { shape: [...parameter.variable.shape], data: fromTorchLayout(parameter, tensor.data) });
  }
  return out;
}

/**
 * Loads a checkpoint's model weights (and optimiser state) after validating all of it. Nothing is
 * assigned unless everything is valid.
 *
 * @param dir - the checkpoint folder (or its `.previous`, see {@link resolveCheckpointDir})
 * @param model - the model to load into; its config must equal the checkpoint's `config.json`
 * @param optimizer - the optimiser to load into, or null to load the weights only
 * @returns the validated trainer state and the folder read
 * @throws `CheckpointError` naming the file: a missing or unreadable file, bad JSON, a model config
 *   that differs from the model's (listing the fields), missing, extra, integer-typed or misshaped
 *   tensors, a non-finite weight (`matchModelWeights`), optimiser state for other parameters, or a step
 *   that disagrees between files
 */
export async function loadCheckpoint(dir: string, model: DecoderLM, optimizer: AdamW | null): Promise<LoadedCheckpoint> {
  const { state, dir: folder } = await readTrainerState(dir);
  await checkCheckpointModel(folder, model);

  const parameters = model.parameters();
  const modelPath = join(folder, CHECKPOINT_FILES.model);
  const weights = matchModelWeights(model, await readSafetensorsFile(modelPath), modelPath); // checked, not yet assigned

  if (optimizer) {
    const optimizerPath = join(folder, CHECKPOINT_FILES.optimizer);
    const decoded = await readSafetensorsFile(optimizerPath);
    const byName = new Map(parameters.map((p) => [p.name, p]));
    const expected = new Map<string, NamedParameter>();
    for (const name of optimizer.parameterNames) {
      const parameter = byName.get(name);
      if (!parameter) throw new ConfigError(`loadCheckpoint: the optimiser updates '${name}', which the model does not have`);
      expected.set(`${name}.exp_avg`, parameter);
      expected.set(`${name}.exp_avg_sq`, parameter);
    }
    const moments = matchOptimizerTensors(optimizerPath, decoded.tensors, expected);
    const step = Number(decoded.metadata.step);
    if (step !== state.step) {
      fail(optimizerPath, `holds the state after step ${decoded.metadata.step ?? '(none)'}, but ${CHECKPOINT_FILES.state} says step ${state.step}`);
    }
    try {
      optimizer.importState({ step, tensors: moments }, optimizerPath);
    } catch (error) {
      fail(optimizerPath, (error as Error).message, error);
    }
  }

  assignModelWeights(weights);
  return { state, dir: folder };
}
