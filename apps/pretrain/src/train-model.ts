/**
 * Trains one model of a comparison and summarises it as a {@link ModelResult}: parameters, FLOPs,
 * throughput (training and expert-forward), validation results and routing, all from the trainer's
 * own metrics file (so a resumed run is summarised over all its steps).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { TrainBatcher, type TextData } from '@moepp/data';
import { countModelFlops, countModelParameters, createModel, ffnShare, MoeLayer, writeFileAtomically, type ModelConfig } from '@moepp/models';
import { readMetricsFile, Trainer, type EvalRecord, type StepRecord } from '@moepp/trainers';
import type { RunConfig } from './config.js';
import type { ModelResult, RoutingSummary } from './results.js';

/** One model to train in a comparison. */
export interface ModelSpec {
  /** Display name and folder name, e.g. `'moepp'`, `'tau=0.25'`. */
  readonly name: string;
  /** Preset variant. */
  readonly variant: string;
  /** The model config. */
  readonly config: ModelConfig;
}

/** How a training ended, for the caller. */
export interface TrainOutcome {
  /** The summary, or null when the run was interrupted before it finished. */
  readonly result: ModelResult | null;
  /** The model's folder. */
  readonly dir: string;
}

const RESULT_FILE = 'model-result.json';

/**
 * @param name - a model's display name
 * @returns the name of its folder in the run folder (unsafe characters replaced by `_`)
 */
export function modelFolderName(name: string): string {
  return name.replace(/[^A-Za-z0-9._=-]+/g, '_');
}

function mean(values: readonly number[]): number {
  return values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;
}

function summariseRouting(steps: readonly StepRecord[], kinds: readonly string[]): RoutingSummary {
  const layers = steps[0]?.tokensPerExpert.length ?? 0;
  const totals = Array.from({ length: layers }, () => new Array<number>(kinds.length).fill(0));
  for (const step of steps) {
    step.tokensPerExpert.forEach((row, layer) => row.forEach((count, e) => (totals[layer]![e]! += count)));
  }
  const loadByLayer = totals.map((row) => {
    const sum = row.reduce((a, b) => a + b, 0);
    return row.map((c) => (sum > 0 ? c / sum : 0));
  });
  const all = totals.flat().reduce((a, b) => a + b, 0);
  const shareOf = (kind: string) =>
    all > 0 ? totals.reduce((acc, row) => acc + row.reduce((s, c, e) => s + (kinds[e] === kind ? c : 0), 0), 0) / all : 0;
  const byLayer = Array.from({ length: layers }, (_, l) => mean(steps.map((s) => s.ffnExpertsPerTokenByLayer[l] ?? 0)));
  return {
    ffnExpertsPerToken: mean(byLayer),
    ffnExpertsPerTokenByLayer: byLayer,
    zeroComputationShare: { zero: shareOf('zero'), copy: shareOf('copy'), constant: shareOf('constant') },
    loadByLayer,
    expertKinds: kinds,
    droppedPerStep: mean(steps.map((s) => s.droppedAssignments)),
  };
}

/**
 * Trains (or resumes, or reloads) one model.
 *
 * - If `dir/model-result.json` exists, the model finished earlier: its result is read back.
 * - Else if `resume` and `dir/checkpoint` exists, training continues from it.
 * - Else training starts fresh.
 *
 * @param spec - the model
 * @param data - the prepared data (each model gets its own batcher over the same stream and seed)
 * @param run - the run config
 * @param dir - the model's folder
 * @param resume - continue an interrupted run
 * @param progressStream - where the progress bar or lines go (stderr when stdout carries `--json`)
 * @returns the result, or null in `result` when the run was interrupted (Ctrl-C)
 */
export async function trainModel(
  spec: ModelSpec,
  data: TextData,
  run: RunConfig,
  dir: string,
  resume: boolean,
  progressStream: NodeJS.WriteStream = process.stdout,
): Promise<TrainOutcome> {
  const modelDir = join(dir, modelFolderName(spec.name));
  const resultPath = join(modelDir, RESULT_FILE);
  if (resume && existsSync(resultPath)) {
    return { result: JSON.parse(await readFile(resultPath, 'utf8')) as ModelResult, dir: modelDir };
  }
  await mkdir(modelDir, { recursive: true });
  const checkpointDir = join(modelDir, 'checkpoint');
  const metricsPath = join(modelDir, 'metrics.jsonl');
  const model = createModel(spec.config, run.seed);
  try {
    const train = new TrainBatcher(data.trainTokens, { batchSize: run.batchSize, seqLen: run.seqLen, seed: run.seed });
    const trainer = new Trainer(
      model,
      { train, validation: data.validation },
      {
        totalSteps: run.steps,
        seed: run.seed,
        schedule: { peakLr: run.learningRate, minLr: run.minLearningRate, warmupSteps: Math.min(run.warmupSteps, run.steps - 1) },
        optimizer: { weightDecay: run.weightDecay },
        gradClip: run.clipNorm > 0 ? run.clipNorm : null,
        loss: { balanceWeight: run.auxLossWeight, zLossWeight: run.zLossWeight },
        evalInterval: run.evalEvery,
        checkpointDir,
        checkpointInterval: run.checkpointEvery,
        metricsPath,
        logInterval: Math.max(1, Math.round(run.steps / 10)),
      },
    );
    const resuming = resume && existsSync(checkpointDir);
    if (resuming) await trainer.resume(checkpointDir);
    else if (existsSync(metricsPath)) await rename(metricsPath, `${metricsPath}.old`);
    const outcome = await trainer.run({ progressStream });
    if (outcome.stopReason !== 'completed') return { result: null, dir: modelDir };

    const records = readMetricsFile(metricsPath);
    const steps = records.filter((r): r is StepRecord => r.type === 'step');
    const evals = records.filter((r): r is EvalRecord => r.type === 'eval');
    const first = evals[0];
    const last = evals[evals.length - 1];
    if (!first || !last) throw new Error(`trainModel: ${spec.name} has no evaluation in ${metricsPath}`);
    const kinds = model.blocks.find((b) => b.ffn instanceof MoeLayer)?.ffn;
    const routing = kinds instanceof MoeLayer ? summariseRouting(steps, kinds.kinds) : null;
    const trainMs = steps.reduce((a, s) => a + s.stepMs, 0);
    const tokens = steps.reduce((a, s) => a + s.tokens, 0);
    const expertMs = steps.reduce((a, s) => a + s.expertForwardMs, 0);
    const moeBlocks = steps[0]?.expertForwardMsByLayer.length ?? 0;
    const measuredFfn = routing?.ffnExpertsPerToken;
    const result: ModelResult = {
      name: spec.name,
      variant: spec.variant,
      parameters: {
        total: countModelParameters(spec.config).total,
        activated: countModelParameters(spec.config, measuredFfn).activated,
      },
      flopsPerToken: {
        total: countModelFlops(spec.config, run.seqLen).total,
        activated: countModelFlops(spec.config, run.seqLen, measuredFfn).activated,
      },
      training: { steps: steps.length, tokens, seconds: trainMs / 1000, tokensPerSecond: trainMs > 0 ? tokens / (trainMs / 1000) : 0 },
      expert: {
        forwardSeconds: expertMs / 1000,
        tokensPerSecond: expertMs > 0 ? (tokens * moeBlocks) / (expertMs / 1000) : 0,
        ratioToMoe: null,
      },
      evaluation: { initialLoss: first.loss, loss: last.loss, perplexity: last.perplexity, accuracy: last.accuracy },
      routing,
      idealSpeedup: spec.config.moe ? 1 / ffnShare(spec.config.moe) : null,
      curve: steps.map((s) => ({
        step: s.step,
        tokens: s.step * run.batchSize * run.seqLen,
        loss: s.crossEntropy,
        ...(evals.find((e) => e.step === s.step) ? { validationLoss: evals.find((e) => e.step === s.step)!.loss } : {}),
      })),
    };
    await writeFileAtomically(resultPath, `${JSON.stringify(result, null, 2)}\n`);
    return { result, dir: modelDir };
  } finally {
    model.dispose();
  }
}

/**
 * Fills each result's `expert.ratioToMoe`: its expert-forward throughput over the vanilla MoE's in the
 * same list (the model whose variant is `moe`).
 *
 * @param results - the trained models
 * @returns new records with the ratio set (null when there is no MoE or for dense models)
 */
export function withRatioToMoe(results: readonly ModelResult[]): ModelResult[] {
  const moe = results.find((r) => r.variant === 'moe');
  return results.map((r) => ({
    ...r,
    expert: {
      ...r.expert,
      ratioToMoe: moe && r.routing && moe.expert.tokensPerSecond > 0 ? r.expert.tokensPerSecond / moe.expert.tokensPerSecond : null,
    },
  }));
}
