/**
 * The trainer's config: one typed, readonly, JSON-serialisable record (it is saved in every checkpoint),
 * with the MoE++ paper's settings as defaults where the paper gives them (§4 / moepp.md: AdamW, weight
 * decay 0.1, clip 1.0, LR 5e-4 -> 5e-5 with warm-up, β = 0.01).
 */
import { ConfigError, checkNumber, describe } from '@moepp/tensors-core';
import { resolveAdamWConfig, type AdamWConfig } from './adamw.js';
import { resolveLossConfig, type LossConfig } from './loss.js';
import { checkSchedule } from './schedule.js';

/** The learning-rate schedule's settings (the total is {@link TrainConfig.totalSteps}). */
export interface ScheduleSettings {
  /** Peak learning rate. Default 5e-4 (paper). */
  readonly peakLr: number;
  /** Final learning rate. Default 5e-5 (paper). */
  readonly minLr: number;
  /** Linear warm-up steps. Default 5% of `totalSteps`, rounded (the paper does not give its value). */
  readonly warmupSteps: number;
}

/** Everything that defines a training run. */
export interface TrainConfig {
  /** S, optimiser steps of the run (an integer >= 1). Required. */
  readonly totalSteps: number;
  /** Seeds the trainer's generator (router noise, where a router uses it). Default 0. Batches have their own seed. */
  readonly seed: number;
  /** A, micro-batches per optimiser step (gradient accumulation). Default 1. */
  readonly accumulationSteps: number;
  /** Warm-up + cosine schedule. */
  readonly schedule: ScheduleSettings;
  /** AdamW hyper-parameters (β1 0.9, β2 0.95, ε 1e-8, weight decay 0.1). */
  readonly optimizer: AdamWConfig;
  /** Clip gradients to this global norm; `null` = no clipping (the norm is still logged). Default 1.0 (paper). */
  readonly gradClip: number | null;
  /** Loss weights (β = 0.01, z-loss 0). */
  readonly loss: LossConfig;
  /**
   * Parameters not to train, as patterns over the official names: `*` matches any characters, the rest
   * literally, the whole name must match (e.g. `model.embed_tokens.weight`, `model.layers.*.self_attn.*`).
   * Each pattern must match at least one parameter. Default none.
   */
  readonly frozen: readonly string[];
  /**
   * Parameters excluded from weight decay besides the default rule (no decay for rank < 2, see
   * `defaultDecayRule`), same pattern syntax. Default none.
   */
  readonly noDecay: readonly string[];
  /** Evaluate every this many steps; 0 = only at the start and the end. Default 0. */
  readonly evalInterval: number;
  /** Evaluate before the first step of a fresh run (the baseline). Default true. */
  readonly evalAtStart: boolean;
  /** Folder of the run's checkpoint (replaced atomically each time); `null` = no checkpoints. Default null. */
  readonly checkpointDir: string | null;
  /** Checkpoint every this many steps; 0 = only at the end and on interrupt. Default 0. */
  readonly checkpointInterval: number;
  /** The `metrics.jsonl` file; `null` = none. Default null. */
  readonly metricsPath: string | null;
  /** Progress lines every this many steps (line mode). Default 10. */
  readonly logInterval: number;
  /** Fail if the live tensor count grows across steps. Default true. */
  readonly leakCheck: boolean;
  /** Steps before the tensor count is taken as the baseline (lazy caches fill in the first steps). Default 2. */
  readonly leakCheckWarmupSteps: number;
  /** On SIGINT, finish the current step, write a checkpoint and stop (a second SIGINT kills). Default true. */
  readonly handleSignals: boolean;
}

/** What a caller passes: `totalSteps` and any overrides; nested records may be partial. */
export type TrainConfigInput = Partial<Omit<TrainConfig, 'totalSteps' | 'schedule' | 'optimizer' | 'loss'>> & {
  /** S, optimiser steps of the run. */
  readonly totalSteps: number;
  /** Any schedule fields; the rest take their defaults. */
  readonly schedule?: Partial<ScheduleSettings>;
  /** Any AdamW fields; the rest take their defaults. */
  readonly optimizer?: Partial<AdamWConfig>;
  /** Any loss weights; the rest take their defaults. */
  readonly loss?: Partial<LossConfig>;
};

/**
 * The fields that define the computation. A resumed run must use the same values as the checkpoint
 * (else it would not continue the same run); the other fields (evaluation, checkpoint and logging
 * cadence, paths, guards) may change between the interrupted and the resumed run.
 */
export const RESUME_FIELDS = [
  'totalSteps',
  'seed',
  'accumulationSteps',
  'schedule',
  'optimizer',
  'gradClip',
  'loss',
  'frozen',
  'noDecay',
] as const satisfies readonly (keyof TrainConfig)[];

function checkBoolean(op: string, field: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw new ConfigError(`${op}: '${field}' must be true or false, got ${describe(value)}`);
  return value;
}

function checkPatterns(op: string, field: string, value: unknown): readonly string[] {
  if (!Array.isArray(value) || value.some((p) => typeof p !== 'string' || p.length === 0)) {
    throw new ConfigError(`${op}: '${field}' must be an array of non-empty name patterns, got ${describe(value)}`);
  }
  return Object.freeze([...(value as string[])]);
}

function checkPath(op: string, field: string, value: unknown): string | null {
  if (value !== null && (typeof value !== 'string' || value.length === 0)) {
    throw new ConfigError(`${op}: '${field}' must be a non-empty path or null, got ${describe(value)}`);
  }
  return value;
}

/**
 * Fills defaults and validates a training config.
 *
 * @param input - `totalSteps` and any overrides
 * @returns the complete, frozen config
 * @throws `ConfigError` naming the field, the expected and the actual value
 */
export function resolveTrainConfig(input: TrainConfigInput): TrainConfig {
  const op = 'TrainConfig';
  const totalSteps = checkNumber(op, 'totalSteps', input?.totalSteps, { integer: true, min: 1 });
  const scheduleInput = input.schedule ?? {};
  const schedule = Object.freeze({
    peakLr: scheduleInput.peakLr ?? 5e-4,
    minLr: scheduleInput.minLr ?? 5e-5,
    warmupSteps: scheduleInput.warmupSteps ?? Math.min(Math.round(0.05 * totalSteps), totalSteps - 1),
  });
  checkSchedule({ ...schedule, totalSteps }, `${op}.schedule`);
  const gradClip = input.gradClip === undefined ? 1.0 : input.gradClip;
  if (gradClip !== null) checkNumber(op, 'gradClip', gradClip, { greaterThan: 0 });
  return Object.freeze({
    totalSteps,
    seed: checkNumber(op, 'seed', input.seed ?? 0, { integer: true, min: 0, max: 2 ** 32 - 1 }),
    accumulationSteps: checkNumber(op, 'accumulationSteps', input.accumulationSteps ?? 1, { integer: true, min: 1 }),
    schedule,
    optimizer: resolveAdamWConfig(input.optimizer ?? {}, `${op}.optimizer`),
    gradClip,
    loss: resolveLossConfig(input.loss ?? {}, `${op}.loss`),
    frozen: checkPatterns(op, 'frozen', input.frozen ?? []),
    noDecay: checkPatterns(op, 'noDecay', input.noDecay ?? []),
    evalInterval: checkNumber(op, 'evalInterval', input.evalInterval ?? 0, { integer: true, min: 0 }),
    evalAtStart: checkBoolean(op, 'evalAtStart', input.evalAtStart ?? true),
    checkpointDir: checkPath(op, 'checkpointDir', input.checkpointDir ?? null),
    checkpointInterval: checkNumber(op, 'checkpointInterval', input.checkpointInterval ?? 0, { integer: true, min: 0 }),
    metricsPath: checkPath(op, 'metricsPath', input.metricsPath ?? null),
    logInterval: checkNumber(op, 'logInterval', input.logInterval ?? 10, { integer: true, min: 1 }),
    leakCheck: checkBoolean(op, 'leakCheck', input.leakCheck ?? true),
    leakCheckWarmupSteps: checkNumber(op, 'leakCheckWarmupSteps', input.leakCheckWarmupSteps ?? 2, { integer: true, min: 0 }),
    handleSignals: checkBoolean(op, 'handleSignals', input.handleSignals ?? true),
  });
}

/**
 * Whether an official parameter name matches a pattern (`*` = any characters, whole-name match).
 *
 * @param pattern - e.g. `model.layers.*.self_attn.*`
 * @param name - e.g. `model.layers.3.self_attn.q_proj.weight`
 * @returns true on a match
 */
export function matchesPattern(pattern: string, name: string): boolean {
  const source = pattern
    .split('*')
    .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${source}$`).test(name);
}

/**
 * The differences between two configs in the {@link RESUME_FIELDS}.
 *
 * @param saved - the config stored in a checkpoint
 * @param given - the config of the run that resumes it
 * @returns one `field: saved -> given` line per difference (empty when the run can resume)
 */
export function resumeDifferences(saved: TrainConfig, given: TrainConfig): string[] {
  const differences: string[] = [];
  for (const field of RESUME_FIELDS) {
    const before = canonicalJson(saved[field]);
    const after = canonicalJson(given[field]);
    if (before !== after) differences.push(`${field}: ${before} in the checkpoint, ${after} now`);
  }
  return differences;
}

/** JSON with object keys sorted, so that two equal configs always give the same text. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) =>
    inner !== null && typeof inner === 'object' && !Array.isArray(inner)
      ? Object.fromEntries(Object.entries(inner as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : inner,
  );
}
