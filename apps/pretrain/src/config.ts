/**
 * Run configuration: a JSON file and/or command-line flags, validated with zod. Errors name the field,
 * what was expected and what was given.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError } from '@moepp/tensors-core';

const presetSchema = z.enum(['smoke', 'nano', 'tiny', 'small']);
const variantSchema = z.enum(['dense', 'moe', 'moepp']);

/** MoE overrides a config may set (the sweep varies them). */
export const moeOverridesSchema = z
  .object({
    tau: z.number().min(0).optional(),
    gatingResidual: z.boolean().optional(),
    zeroGateRule: z.enum(['drop-and-renormalize', 'raw-softmax']).optional(),
    topK: z.number().int().min(1).optional(),
    capacityFactor: z.number().min(0).nullable().optional(),
    logitsNorm: z.boolean().optional(),
    twoLayerGate: z.boolean().optional(),
    experts: z
      .object({
        ffn: z.number().int().min(1).optional(),
        zero: z.number().int().min(0).optional(),
        copy: z.number().int().min(0).optional(),
        constant: z.number().int().min(0).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

/** The validated run configuration. */
export const runConfigSchema = z
  .object({
    /** Model size preset. */
    preset: presetSchema,
    /** Which variants to train, in order. */
    variants: z.array(variantSchema).min(1),
    /** Corpus: `sotu` (default), `moby-dick`, `brown`, or a path to a .txt file or folder. */
    corpus: z.string().min(1),
    /** `bytes` or a BPE vocabulary size (512–8192). */
    tokenizer: z.union([z.literal('bytes'), z.number().int().min(512).max(8192)]),
    /** Optimiser steps per model. */
    steps: z.number().int().min(1),
    /** Sequences per step. */
    batchSize: z.number().int().min(1),
    /** Tokens per sequence. */
    seqLen: z.number().int().min(2),
    /** Peak learning rate. */
    learningRate: z.number().positive(),
    /** Final learning rate of the cosine schedule. */
    minLearningRate: z.number().min(0),
    /** Linear warm-up steps. */
    warmupSteps: z.number().int().min(0),
    /** AdamW decoupled weight decay. */
    weightDecay: z.number().min(0),
    /** Gradient clipping by global norm (0 = off). */
    clipNorm: z.number().min(0),
    /** beta, the weight of the load-balance loss. */
    auxLossWeight: z.number().min(0),
    /** Weight of the router z-loss. */
    zLossWeight: z.number().min(0),
    /** Evaluate every this many steps (and at the end). */
    evalEvery: z.number().int().min(1),
    /** Validation windows (fixed). */
    validationWindows: z.number().int().min(1),
    /** Checkpoint every this many steps (and at the end and on Ctrl-C). */
    checkpointEvery: z.number().int().min(1),
    /** Seed of weights, data order and router noise. */
    seed: z.number().int().min(0).max(2 ** 32 - 1),
    /** tfjs backend. */
    backend: z.enum(['auto', 'cpu', 'wasm', 'tensorflow']),
    /** Output folder of this run. */
    out: z.string().min(1),
    /** MoE / MoE++ overrides. */
    moe: moeOverridesSchema,
  })
  .strict();

/** A validated run configuration. */
export type RunConfig = z.infer<typeof runConfigSchema>;

/** The preset of `npm run pretrain` with no flags: its comparison fits in 10 minutes on 2 CPU cores. */
export const DEFAULT_PRESET = 'nano';

/**
 * Per-preset defaults chosen so that `compare` fits its time budget on 2 CPU cores. `small` trains 4
 * sequences of 256 tokens per step: its dense variant's activations for 16 × 256 tokens pass the wasm
 * backend's 2 GB heap.
 */
export const PRESET_DEFAULTS: Readonly<Record<RunConfig['preset'], Partial<RunConfig>>> = {
  smoke: { tokenizer: 'bytes', corpus: 'moby-dick', steps: 30, batchSize: 8, seqLen: 64, evalEvery: 15, validationWindows: 16, warmupSteps: 5, learningRate: 3e-3 },
  nano: { tokenizer: 'bytes', corpus: 'sotu', steps: 150, batchSize: 16, seqLen: 128, evalEvery: 50, validationWindows: 32, warmupSteps: 15, learningRate: 2e-3 },
  tiny: { tokenizer: 'bytes', corpus: 'sotu', steps: 300, batchSize: 16, seqLen: 128, evalEvery: 100, validationWindows: 32, warmupSteps: 30, learningRate: 1.5e-3 },
  small: { tokenizer: 1024, corpus: 'sotu', steps: 1000, batchSize: 4, seqLen: 256, evalEvery: 200, validationWindows: 64, warmupSteps: 100, learningRate: 1e-3 },
};

/** Defaults that do not depend on the preset. */
export const COMMON_DEFAULTS: Omit<RunConfig, 'preset' | 'out'> = {
  variants: ['dense', 'moe', 'moepp'],
  corpus: 'sotu',
  tokenizer: 'bytes',
  steps: 300,
  batchSize: 16,
  seqLen: 128,
  learningRate: 1.5e-3,
  minLearningRate: 1e-4,
  warmupSteps: 30,
  weightDecay: 0.1,
  clipNorm: 1,
  auxLossWeight: 0.01,
  zLossWeight: 0,
  evalEvery: 100,
  validationWindows: 32,
  checkpointEvery: 100,
  seed: 0,
  backend: 'auto',
  moe: {},
};

function formatIssues(error: z.ZodError, source: string): string {
  return error.issues
    .map((issue) => {
      const field = issue.path.length > 0 ? issue.path.join('.') : '(config)';
      return `${source}: field '${field}': ${issue.message}`;
    })
    .join('\n');
}

/**
 * Reads a JSON config file.
 *
 * @param path - the file
 * @returns the parsed object (not yet validated)
 * @throws `ConfigError` naming the file when it is missing or not a JSON object
 */
export function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`--config ${path}: cannot read the file (${(error as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`--config ${path}: not valid JSON (${(error as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(`--config ${path}: must hold a JSON object of settings`);
  }
  return json as Record<string, unknown>;
}

/**
 * Resolves a run config: common defaults, then the preset's defaults, then the file, then the flags.
 *
 * @param layers - objects of settings, later ones win; `preset` may come from any of them (default {@link DEFAULT_PRESET})
 * @param source - where the settings came from, for error messages
 * @returns the validated config
 * @throws `ConfigError` listing every invalid field with what was expected
 */
export function resolveRunConfig(layers: readonly Record<string, unknown>[], source = 'config'): RunConfig {
  const merged: Record<string, unknown> = {};
  for (const layer of layers) for (const [k, v] of Object.entries(layer)) if (v !== undefined) merged[k] = v;
  const preset = presetSchema.safeParse(merged.preset ?? DEFAULT_PRESET);
  if (!preset.success) throw new ConfigError(formatIssues(new z.ZodError(preset.error.issues.map((i) => ({ ...i, path: ['preset'] }))), source));
  const moe = { ...(merged.moe as Record<string, unknown> | undefined) };
  const candidate = {
    ...COMMON_DEFAULTS,
    ...PRESET_DEFAULTS[preset.data],
    out: `runs/${preset.data}-${new Date().toISOString().replace(/[:.]/g, '-')}`,
    ...merged,
    preset: preset.data,
    moe,
  };
  const parsed = runConfigSchema.safeParse(candidate);
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error, source));
  if (parsed.data.minLearningRate > parsed.data.learningRate) {
    throw new ConfigError(`${source}: field 'minLearningRate' (${parsed.data.minLearningRate}) must not exceed learningRate (${parsed.data.learningRate})`);
  }
  return parsed.data;
}
