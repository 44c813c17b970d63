/**
 * The training loop. One optimiser step:
 *
 *     lr      = learningRateAt(step)                                   warm-up + cosine
 *     for each of A micro-batches:                                     gradient accumulation
 *       batch = data.train.next()                                      inputs, targets: int32 [B, T]
 *       L, ∇  = tf.variableGrads(languageModelLoss(model.forward(inputs)), trainable variables)
 *     ∇       = mean of the A gradients; loss terms read back          (a non-finite loss stops here)
 *     ‖∇‖     = globalNorm(∇)                                          (a non-finite norm stops here)
 *     AdamW update with lr of clipScale(‖∇‖, gradClip)·∇                the clipping factor applied as the update reads ∇
 *
 * then a `step` line in `metrics.jsonl`, progress, the `onStep` hook, an evaluation and a checkpoint
 * when due, and the tensor-leak check. SIGINT (Ctrl-C) finishes the current step, writes a checkpoint
 * and stops; the handler is removed when the run ends.
 *
 * Resuming restores weights, optimiser moments, step, generator state, data cursor and history, so a run
 * stopped after K steps and resumed continues with exactly the numbers an uninterrupted run computes.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, SeededRandom, checkNumber } from '@moepp/tensors-core';
import { CheckpointError, MoeLayer, previousFolderPath, type DecoderLM, type NamedParameter } from '@moepp/models';
import type { BatchCursor, TokenBatch } from '@moepp/data';
import { GradientAccumulator } from './accumulate.js';
import { AdamW, defaultDecayRule } from './adamw.js';
import {
  CHECKPOINT_FILES,
  TRAINER_STATE_FORMAT,
  TRAINER_STATE_VERSION,
  checkCheckpointModel,
  loadCheckpoint,
  readTrainerState,
  writeCheckpoint,
  type CheckpointReason,
  type TrainHistory,
  type TrainerState,
} from './checkpoint.js';
import { clipScale, globalNorm } from './clip.js';
import { matchesPattern, resolveTrainConfig, resumeDifferences, type TrainConfig, type TrainConfigInput } from './config.js';
import { checkBatchTokens, evaluate } from './evaluate.js';
import { NonFiniteLossError, TensorLeakError, describeLossReport, nonFiniteVariables, type LossReport } from './guards.js';
import { languageModelLoss } from './loss.js';
import { MetricsLog, type EvalRecord, type StepRecord } from './metrics.js';
import { createProgressReporter, type ProgressMode, type ProgressReporter, type ProgressStream } from './progress.js';
import { learningRateAt, type LearningRateSchedule } from './schedule.js';

/** Where training batches come from: a `TrainBatcher` of `@moepp/data`, or anything that behaves like one. */
export interface TrainBatchSource {
  /** B, windows per batch. */
  readonly batchSize: number;
  /** T, input tokens per window. */
  readonly seqLen: number;
  /** Windows in the training stream (stored in checkpoints to recognise the data). */
  readonly windowCount: number;
  /** @returns the next batch (`inputs`, `targets`: int32 `[B, T]`) */
  next(): TokenBatch;
  /** @returns where the next batch starts (JSON) */
  getCursor(): BatchCursor;
  /** Continues from a cursor. */
  setCursor(cursor: BatchCursor): void;
}

/** The data a run needs; `prepareTextData(…)` of `@moepp/data` returns a superset. */
export interface TrainingData {
  /** Training batches. */
  readonly train: TrainBatchSource;
  /** The fixed validation batches (may be empty: no evaluation then). */
  readonly validation: readonly TokenBatch[];
}

/** Information passed to {@link TrainHooks.onCheckpoint}. */
export interface CheckpointInfo {
  /** The checkpoint folder. */
  readonly dir: string;
  /** The step it holds. */
  readonly step: number;
  /** Why it was written. */
  readonly reason: CheckpointReason;
}

/** Callbacks during a run. They may be async; the run waits for them. */
export interface TrainHooks {
  /** After every optimiser step (and its metrics line). */
  onStep?(record: StepRecord, trainer: Trainer): void | Promise<void>;
  /** After every evaluation. */
  onEval?(record: EvalRecord, trainer: Trainer): void | Promise<void>;
  /** After every checkpoint. */
  onCheckpoint?(info: CheckpointInfo, trainer: Trainer): void | Promise<void>;
}

/** Options of one {@link Trainer.run} (not part of the run's identity, not saved). */
export interface RunOptions {
  /** Callbacks. */
  readonly hooks?: TrainHooks;
  /** Stop (and write a checkpoint) once this many steps are done, before `totalSteps`. Default: run to the end. */
  readonly stopAtStep?: number;
  /** A progress mode or a reporter of your own. Default `'auto'`. */
  readonly progress?: ProgressMode | ProgressReporter;
  /** Where progress goes. Default `process.stdout`. */
  readonly progressStream?: ProgressStream;
}

/** Why a run ended. */
export type StopReason = 'completed' | 'interrupted' | 'stopAtStep' | 'requested';

/** What a run returns. */
export interface TrainResult {
  /** Optimiser steps completed (including those before a resume). */
  readonly step: number;
  /** Why the run ended. */
  readonly stopReason: StopReason;
  /** Total loss of every step from 1 to `step` (restored steps included). */
  readonly losses: readonly number[];
  /** Every evaluation of the run (restored ones included). */
  readonly evals: readonly EvalRecord[];
  /** The last step's record of this run, or null if it ran no step. */
  readonly lastStep: StepRecord | null;
  /** The checkpoint folder last written, or null. */
  readonly checkpointDir: string | null;
  /** Tokens trained on in this run (not counting restored steps). */
  readonly tokens: number;
  /** Wall time of this run, ms. */
  readonly elapsedMs: number;
}

/** A second SIGINT within this many ms of the first is the same Ctrl-C delivered twice, not a second press. */
const SIGNAL_REPEAT_MS = 500;

const yieldToEventLoop = () => new Promise<void>((resolvePromise) => setImmediate(resolvePromise));

/**
 * Trains a `DecoderLM`: AdamW, warm-up + cosine schedule, clipping, accumulation, evaluation,
 * metrics, progress, atomic checkpoints, resume and guards. See the module notes for one step.
 *
 * @example
 * ```ts
 * const data = prepareTextData({ corpus: 'moby-dick', seqLen: 64, batchSize: 8, seed: 1, validationWindows: 32 });
 * const model = createModel(presetConfig('smoke', 'moepp', { vocabSize: 256 }), 1);
 * const trainer = new Trainer(model, data, { totalSteps: 200, checkpointDir: 'runs/a/checkpoint', metricsPath: 'runs/a/metrics.jsonl' });
 * const result = await trainer.run();
 * ```
 */
export class Trainer {
  /** The model trained (not owned: the caller disposes it). */
  readonly model: DecoderLM;
  /** The data. */
  readonly data: TrainingData;
  /** The resolved config. */
  readonly config: TrainConfig;
  /** The optimiser (owned: {@link Trainer.dispose} frees its state). */
  readonly optimizer: AdamW;
  /** The parameters being trained. */
  readonly trainable: readonly NamedParameter[];
  /** The parameters matched by `config.frozen`. */
  readonly frozen: readonly NamedParameter[];

  private readonly schedule: LearningRateSchedule;
  private readonly rng: SeededRandom;
  private readonly trainableVariables: tf.Variable[];
  private readonly officialNames: Map<string, string>; // tf variable name -> official name
  private completedSteps = 0;
  private losses: number[] = [];
  private evals: EvalRecord[] = [];
  private stopRequest: StopReason | null = null;
  private running = false;
  private readonly ownCheckpointDirs = new Set<string>();
  private lastCheckpointStep: number | null = null;

  /**
   * @param model - the model to train
   * @param data - training batches and validation batches (e.g. from `prepareTextData`)
   * @param config - `totalSteps` and overrides (see {@link TrainConfig})
   * @throws `ConfigError` for an invalid config, a `frozen` pattern that matches no parameter, a
   *   run with every parameter frozen, or data whose T exceeds the model's `maxSeqLen`
   */
  constructor(model: DecoderLM, data: TrainingData, config: TrainConfigInput | TrainConfig) {
    this.model = model;
    this.data = data;
    this.config = resolveTrainConfig(config);
    const op = 'Trainer';
    if (data?.train === undefined || !Array.isArray(data.validation)) {
      throw new ConfigError(`${op}: 'data' must have 'train' (a TrainBatcher) and 'validation' (batches), got ${Object.keys(data ?? {}).join(', ')}`);
    }
    if (data.train.seqLen > model.config.maxSeqLen) {
      throw new ConfigError(`${op}: data seqLen ${data.train.seqLen} exceeds the model's maxSeqLen ${model.config.maxSeqLen}`);
    }
    const parameters = model.parameters();
    for (const pattern of this.config.frozen) {
      if (!parameters.some((p) => matchesPattern(pattern, p.name))) {
        throw new ConfigError(`${op}: frozen pattern '${pattern}' matches no parameter (names look like '${parameters[1]?.name ?? parameters[0]?.name}')`);
      }
    }
    for (const pattern of this.config.noDecay) {
      if (!parameters.some((p) => matchesPattern(pattern, p.name))) {
        throw new ConfigError(`${op}: noDecay pattern '${pattern}' matches no parameter`);
      }
    }
    const isFrozen = (p: NamedParameter) => this.config.frozen.some((pattern) => matchesPattern(pattern, p.name));
    this.trainable = parameters.filter((p) => !isFrozen(p));
    this.frozen = parameters.filter(isFrozen);
    if (this.trainable.length === 0) throw new ConfigError(`${op}: 'frozen' freezes every parameter; nothing would train`);
    this.trainableVariables = this.trainable.map((p) => p.variable);
    this.officialNames = new Map(this.trainable.map((p) => [p.variable.name, p.name]));
    this.optimizer = new AdamW(
      this.trainable.map((p) => ({
        name: p.name,
        variable: p.variable,
        decay: defaultDecayRule(p.name, p.variable.shape) && !this.config.noDecay.some((pattern) => matchesPattern(pattern, p.name)),
      })),
      this.config.optimizer,
    );
    this.schedule = { ...this.config.schedule, totalSteps: this.config.totalSteps };
    this.rng = new SeededRandom(this.config.seed);
  }

  /** @returns optimiser steps completed */
  get step(): number {
    return this.completedSteps;
  }

  /** @returns the loss of every completed step and every evaluation so far */
  get history(): TrainHistory {
    return { losses: [...this.losses], evals: [...this.evals] };
  }

  /**
   * @param step - a 0-based step index
   * @returns the learning rate the schedule gives that step
   */
  learningRate(step: number): number {
    return learningRateAt(step, this.schedule);
  }

  /** Asks a running {@link Trainer.run} to stop after the current step (and write a checkpoint). */
  requestStop(): void {
    this.stopRequest ??= 'requested';
  }

  /**
   * Restores a checkpoint of the same run: weights, optimiser state, step, generator state, data
   * cursor and history. Everything is validated first; on any error nothing changes, and the
   * checkpoint is never modified.
   *
   * @param dir - the checkpoint folder (its `.previous` is used if a crash left only that)
   * @returns when restored
   * @throws `CheckpointError` naming the file: see {@link loadCheckpoint}, plus a trainer config
   *   that differs in a field of `RESUME_FIELDS`, other batching or data, other trained parameters
   * @throws `ConfigError` when this trainer has already trained
   */
  async resume(dir: string): Promise<void> {
    if (this.running || this.completedSteps > 0) {
      throw new ConfigError(`Trainer.resume: only a trainer that has not trained yet can resume (it is at step ${this.completedSteps})`);
    }
    const { state, dir: folder } = await readTrainerState(dir);
    const statePath = join(folder, CHECKPOINT_FILES.state);
    const differences = resumeDifferences(state.config, this.config);
    if (differences.length > 0) {
      throw new CheckpointError(`${statePath}: the checkpoint belongs to a run with another config: ${differences.join('; ')}`);
    }
    await checkCheckpointModel(folder, this.model);
    const train = this.data.train;
    const dataNow = { batchSize: train.batchSize, seqLen: train.seqLen, windowCount: train.windowCount };
    if (JSON.stringify(dataNow) !== JSON.stringify({ batchSize: state.data.batchSize, seqLen: state.data.seqLen, windowCount: state.data.windowCount })) {
      throw new CheckpointError(`${statePath}: the checkpoint's data is ${JSON.stringify(state.data)}, the trainer's ${JSON.stringify(dataNow)}`);
    }
    const names = this.trainable.map((p) => p.name);
    if (JSON.stringify([...state.trainableParameters].sort()) !== JSON.stringify([...names].sort())) {
      throw new CheckpointError(`${statePath}: the checkpoint trained other parameters than this trainer would (check 'frozen')`);
    }
    const cursorBefore = train.getCursor();
    try {
      train.setCursor(state.dataCursor);
    } catch (error) {
      throw new CheckpointError(`${statePath}: 'dataCursor' does not fit this data: ${(error as Error).message}`, { cause: error });
    }
    try {
      await loadCheckpoint(folder, this.model, this.optimizer);
    } catch (error) {
      train.setCursor(cursorBefore);
      throw error;
    }
    this.rng.setState(state.rngState);
    this.completedSteps = state.step;
    this.losses = [...state.history.losses];
    this.evals = [...state.history.evals];
    this.ownCheckpointDirs.add(resolve(dir));
    this.ownCheckpointDirs.add(folder);
    this.lastCheckpointStep = state.step;
  }

  /**
   * The state a checkpoint of this moment holds.
   *
   * @param reason - why it is written
   * @returns the trainer state
   */
  trainerState(reason: CheckpointReason): TrainerState {
    const train = this.data.train;
    return {
      format: TRAINER_STATE_FORMAT,
      version: TRAINER_STATE_VERSION,
      step: this.completedSteps,
      reason,
      savedAt: new Date().toISOString(),
      rngState: this.rng.getState(),
      dataCursor: train.getCursor(),
      data: { batchSize: train.batchSize, seqLen: train.seqLen, windowCount: train.windowCount },
      config: this.config,
      history: this.history,
      trainableParameters: this.trainable.map((p) => p.name),
    };
  }

  /**
   * Writes a checkpoint now (atomically, see `writeCheckpoint`).
   *
   * @param dir - the folder; default `config.checkpointDir`
   * @param reason - recorded in `trainer-state.json`. Default `'manual'`
   * @returns the folder written
   * @throws `ConfigError` when no folder is given or configured
   * @throws {@link NonFiniteLossError} when a weight is NaN or infinite (nothing is written)
   * @throws `CheckpointError` when writing fails (the previous checkpoint stays)
   */
  async saveCheckpoint(dir: string | null = this.config.checkpointDir, reason: CheckpointReason = 'manual'): Promise<string> {
    if (dir === null) throw new ConfigError("Trainer.saveCheckpoint: no folder given and 'checkpointDir' is null");
    const bad = nonFiniteVariables(this.model.parameters().map((p) => ({ name: p.name, variable: p.variable })));
    if (bad.length > 0) {
      const report: LossReport = { loss: NaN, crossEntropy: NaN, loadBalance: NaN, zLoss: NaN, gradNorm: NaN, lr: this.learningRate(Math.max(0, this.completedSteps - 1)) };
      throw new NonFiniteLossError(
        'weights',
        this.completedSteps,
        report,
        `Trainer: after step ${this.completedSteps}, ${bad.length} weight tensor(s) hold NaN or infinity (e.g. '${bad[0]}'); no checkpoint written, the last one is left as it was`,
      );
    }
    const target = resolve(dir);
    await writeCheckpoint(target, { model: this.model, optimizer: this.optimizer, state: this.trainerState(reason) });
    this.ownCheckpointDirs.add(target);
    return target;
  }

  /**
   * Evaluates the model on the validation batches now.
   *
   * @returns the eval record for the current step (not added to the history; {@link Trainer.run} adds its own)
   * @throws `ConfigError` when there are no validation batches
   */
  async evaluate(): Promise<EvalRecord> {
    const result = await evaluate(this.model, this.data.validation);
    return {
      type: 'eval',
      step: this.completedSteps,
      loss: result.loss,
      perplexity: result.perplexity,
      accuracy: result.accuracy,
      tokens: result.tokens,
      ffnExpertsPerToken: result.ffnExpertsPerToken,
      evalMs: result.elapsedMs,
    };
  }

  /**
   * Runs one optimiser step (A micro-batches, clip, AdamW update).
   *
   * @param runStarted - `performance.now()` at the start of the run, for `elapsedMs`
   * @returns the step's record
   * @throws {@link NonFiniteLossError} on a NaN or infinite loss or gradient norm (the update is not applied)
   * @throws `ConfigError` when a batch holds a token id outside the model's vocabulary
   */
  async trainStep(runStarted = performance.now()): Promise<StepRecord> {
    const started = performance.now();
    const stepNumber = this.completedSteps + 1;
    const lr = this.learningRate(this.completedSteps);
    const accumulation = this.config.accumulationSteps;
    const { batchSize, seqLen } = this.data.train;
    const vocabSize = this.model.config.vocabSize;
    const accumulator = new GradientAccumulator();
    const reports: tf.Tensor1D[] = []; // per micro-batch: [4 + 3·L_moe] loss terms and layer statistics
    const layerHost: { tokensPerExpert: readonly number[]; expertForwardMs: number }[][] = [];
    let epoch = 0;
    try {
      for (let micro = 0; micro < accumulation; micro++) {
        const batch = this.data.train.next();
        checkBatchTokens(batch, vocabSize, `Trainer: step ${stepNumber}, micro-batch ${micro}`);
        epoch = batch.epoch;
        const inputs = tf.tensor2d(batch.inputs, [batchSize, seqLen], 'int32'); // [B, T]
        const targets = tf.tensor2d(batch.targets, [batchSize, seqLen], 'int32'); // [B, T]
        try {
          const { value, grads } = tf.variableGrads(() => {
            const output = this.model.forward(inputs, { training: true, rng: this.rng });
            const terms = languageModelLoss(output, targets, this.config.loss);
            const layerStats = output.moeLayers.flatMap((layer) => [
              layer.stats.ffnExpertsPerToken,
              layer.stats.droppedAssignments,
              layer.stats.entropy,
            ]);
            // Kept past variableGrads' scope; read back below in one transfer.
            reports.push(tf.keep(tf.stack([terms.total, terms.crossEntropy, terms.loadBalance, terms.zLoss, ...layerStats]) as tf.Tensor1D));
            layerHost.push(output.moeLayers.map((layer) => ({ tokensPerExpert: layer.tokensPerExpert, expertForwardMs: layer.expertForwardMs })));
            return terms.total;
          }, this.trainableVariables);
          value.dispose();
          accumulator.add(new Map(Object.entries(grads).map(([variableName, gradient]) => [this.officialName(variableName), gradient])));
        } finally {
          tf.dispose([inputs, targets]);
        }
      }

      // Read the loss back every step: the numbers for the metrics, and honest timing.
      const values = await Promise.all(reports.map((report) => report.data()));
      const meanOf = (index: number) => values.reduce((sum, v) => sum + (v[index] as number), 0) / values.length;
      let report: LossReport = { loss: meanOf(0), crossEntropy: meanOf(1), loadBalance: meanOf(2), zLoss: meanOf(3), gradNorm: NaN, lr };
      if (![report.loss, report.crossEntropy, report.loadBalance, report.zLoss].every(Number.isFinite)) {
        throw new NonFiniteLossError(
          'loss',
          stepNumber,
          report,
          `Trainer: the loss is not finite at step ${stepNumber} (${describeLossReport(report)}); stopped before the update, no checkpoint written${this.checkpointNote()}`,
        );
      }

      const meanGradients = accumulator.takeMean();
      const names = [...meanGradients.keys()];
      try {
        // Clipping: the norm here, the factor applied by the AdamW update as it reads each gradient.
        const norm = globalNorm(names.map((name) => meanGradients.get(name) as tf.Tensor));
        report = { ...report, gradNorm: norm };
        if (!Number.isFinite(norm)) {
          throw new NonFiniteLossError(
            'gradient',
            stepNumber,
            report,
            `Trainer: the gradient norm is not finite at step ${stepNumber} (${describeLossReport(report)}); stopped before the update, no checkpoint written${this.checkpointNote()}`,
          );
        }
        this.optimizer.applyGradients(meanGradients, lr, { gradientScale: clipScale(norm, this.config.gradClip) });
      } finally {
        tf.dispose([...meanGradients.values()]);
      }

      this.completedSteps = stepNumber;
      this.losses.push(report.loss);
      const stepMs = performance.now() - started;
      const tokens = accumulation * batchSize * seqLen;
      const moeLayerCount = layerHost[0]?.length ?? 0;
      const perLayer = (pick: (microBatch: number, layer: number) => number) =>
        Array.from({ length: moeLayerCount }, (_, layer) => values.reduce((sum, _v, micro) => sum + pick(micro, layer), 0));
      const statOf = (micro: number, layer: number, offset: number) => (values[micro] as Float32Array)[4 + 3 * layer + offset] as number;
      const ffnByLayer = perLayer((micro, layer) => statOf(micro, layer, 0) / accumulation);
      const droppedByLayer = perLayer((micro, layer) => statOf(micro, layer, 1));
      const entropyByLayer = perLayer((micro, layer) => statOf(micro, layer, 2) / accumulation);
      const expertMsByLayer = perLayer((micro, layer) => layerHost[micro]?.[layer]?.expertForwardMs ?? 0);
      const expertForwardMs = expertMsByLayer.reduce((a, b) => a + b, 0);
      const tokensPerExpert = Array.from({ length: moeLayerCount }, (_, layer) => {
        const counts = [...(layerHost[0]?.[layer]?.tokensPerExpert ?? [])].map(() => 0);
        for (const micro of layerHost) micro[layer]?.tokensPerExpert.forEach((count, e) => (counts[e] = (counts[e] as number) + count));
        return counts;
      });
      return {
        type: 'step',
        step: stepNumber,
        epoch,
        lr,
        loss: report.loss,
        crossEntropy: report.crossEntropy,
        loadBalance: report.loadBalance,
        zLoss: report.zLoss,
        gradNorm: report.gradNorm,
        tokens,
        stepMs,
        tokensPerSecond: tokens / (stepMs / 1000),
        expertForwardMs,
        expertForwardMsByLayer: expertMsByLayer,
        expertTokensPerSecond: moeLayerCount > 0 && expertForwardMs > 0 ? (tokens * moeLayerCount) / (expertForwardMs / 1000) : null,
        ffnExpertsPerToken: moeLayerCount > 0 ? ffnByLayer.reduce((a, b) => a + b, 0) / moeLayerCount : null,
        ffnExpertsPerTokenByLayer: ffnByLayer,
        tokensPerExpert,
        droppedAssignments: droppedByLayer.reduce((a, b) => a + b, 0),
        droppedAssignmentsByLayer: droppedByLayer,
        routerEntropyByLayer: entropyByLayer,
        liveTensors: tf.memory().numTensors,
        elapsedMs: performance.now() - runStarted,
      };
    } finally {
      accumulator.dispose();
      tf.dispose(reports);
    }
  }

  /**
   * Trains until `totalSteps` (or `stopAtStep`, a stop request or SIGINT), evaluating, logging and
   * checkpointing as configured. A fresh run refuses a `checkpointDir` that already exists (resume from
   * it, or pick another folder), so an earlier run's checkpoint is never overwritten by accident.
   *
   * @param options - hooks, progress, an early stop
   * @returns how far it got, why it stopped, the loss and eval history
   * @throws {@link NonFiniteLossError} on a NaN or infinite loss, gradient norm or weight; the last
   *   checkpoint on disk is left as it was
   * @throws {@link TensorLeakError} when the live tensor count grows after the warm-up steps
   * @throws `ConfigError` for a bad option, a run already in progress, or an existing `checkpointDir`
   * @throws `CheckpointError` when a checkpoint cannot be written
   */
  async run(options: RunOptions = {}): Promise<TrainResult> {
    const op = 'Trainer.run';
    if (this.running) throw new ConfigError(`${op}: this trainer is already running`);
    const config = this.config;
    const stopAt =
      options.stopAtStep === undefined
        ? config.totalSteps
        : checkNumber(op, 'stopAtStep', options.stopAtStep, { integer: true, min: 0, max: config.totalSteps });
    if (config.checkpointDir !== null) {
      const target = resolve(config.checkpointDir);
      if (!this.ownCheckpointDirs.has(target) && (existsSync(target) || existsSync(previousFolderPath(target)))) {
        throw new ConfigError(
          `${op}: checkpointDir '${target}' already exists; resume from it (Trainer.resume / train(…, { resumeFrom })) or choose another folder`,
        );
      }
    }
    const progress =
      typeof options.progress === 'object'
        ? options.progress
        : createProgressReporter({
            mode: options.progress ?? 'auto',
            logInterval: config.logInterval,
            ...(options.progressStream ? { stream: options.progressStream } : {}),
          });
    const hooks = options.hooks ?? {};
    const startStep = this.completedSteps;
    const runStarted = performance.now();
    let metrics: MetricsLog | null = null;
    let signalHandler: (() => void) | null = null;
    let lastStep: StepRecord | null = null;
    let lastCheckpoint: string | null = null;
    let stopReason: StopReason = 'completed';
    let tokens = 0;
    this.running = true;
    this.stopRequest = null;

    const evaluateNow = async () => {
      if (this.data.validation.length === 0) return;
      const record = await this.evaluate();
      this.evals.push(record);
      metrics?.write(record);
      progress.eval(record);
      await hooks.onEval?.(record, this);
    };
    const checkpointNow = async (reason: CheckpointReason) => {
      if (config.checkpointDir === null || this.lastCheckpointStep === this.completedSteps) return;
      lastCheckpoint = await this.saveCheckpoint(config.checkpointDir, reason);
      this.lastCheckpointStep = this.completedSteps;
      await hooks.onCheckpoint?.({ dir: lastCheckpoint, step: this.completedSteps, reason }, this);
    };

    try {
      metrics = config.metricsPath === null ? null : new MetricsLog(config.metricsPath, startStep > 0 ? startStep : undefined);
      if (config.handleSignals) {
        let firstSignalAt: number | null = null;
        signalHandler = () => {
          const now = performance.now();
          if (firstSignalAt !== null) {
            // One Ctrl-C often arrives twice: the terminal signals the whole process group, and a wrapper
            // (npm, tsx) relays it to its child too. Both copies are handled after the same step.
            if (now - firstSignalAt < SIGNAL_REPEAT_MS) return;
            // A second Ctrl-C: give up on the checkpoint and let the default action end the process.
            if (signalHandler) process.removeListener('SIGINT', signalHandler);
            process.kill(process.pid, 'SIGINT');
            return;
          }
          firstSignalAt = now;
          this.stopRequest = 'interrupted';
          progress.message('SIGINT: finishing the current step, then writing a checkpoint (Ctrl-C again to quit at once)');
        };
        process.on('SIGINT', signalHandler);
      }
      metrics?.write({
        type: 'start',
        step: startStep,
        resumed: startStep > 0,
        backend: tf.getBackend(),
        time: new Date().toISOString(),
        moeBlocks: this.model.blocks.flatMap((block, index) => (block.ffn instanceof MoeLayer ? [index] : [])),
        batchSize: this.data.train.batchSize,
        seqLen: this.data.train.seqLen,
        details: {
          config,
          model: this.model.config,
          parameters: this.model.parameters().reduce((sum, p) => sum + p.variable.size, 0),
          trainableParameters: this.trainable.reduce((sum, p) => sum + p.variable.size, 0),
        },
      });
      progress.start(config.totalSteps, startStep);
      if (startStep === 0 && config.evalAtStart && !this.evals.some((e) => e.step === 0)) await evaluateNow();

      let leakBaseline = tf.memory().numTensors;
      while (this.completedSteps < config.totalSteps) {
        await yieldToEventLoop(); // lets a pending SIGINT handler run
        const requested = this.pendingStop();
        if (requested !== null) {
          stopReason = requested;
          break;
        }
        if (this.completedSteps >= stopAt) {
          stopReason = 'stopAtStep';
          break;
        }
        const record = await this.trainStep(runStarted);
        lastStep = record;
        tokens += record.tokens;
        metrics?.write(record);
        progress.step(record);
        await hooks.onStep?.(record, this);
        const step = this.completedSteps;
        if ((config.evalInterval > 0 && step % config.evalInterval === 0) || step === config.totalSteps) await evaluateNow();
        if (config.checkpointInterval > 0 && step % config.checkpointInterval === 0 && step < config.totalSteps) await checkpointNow('interval');
        if (config.leakCheck) {
          const live = tf.memory().numTensors;
          if (step - startStep <= config.leakCheckWarmupSteps) leakBaseline = live;
          else if (live > leakBaseline) throw new TensorLeakError(step, leakBaseline, live);
        }
      }
      if (this.completedSteps >= stopAt && stopReason === 'completed' && this.completedSteps < config.totalSteps) stopReason = 'stopAtStep';
      const reason: CheckpointReason = stopReason === 'completed' ? 'final' : stopReason === 'interrupted' ? 'interrupt' : 'stop';
      await checkpointNow(reason);
      if (stopReason === 'interrupted') {
        progress.message(`Interrupted after step ${this.completedSteps}${lastCheckpoint ? `; checkpoint in ${lastCheckpoint}` : ''}`);
      }
    } finally {
      if (signalHandler) process.removeListener('SIGINT', signalHandler);
      progress.stop();
      metrics?.close();
      this.running = false;
    }
    return {
      step: this.completedSteps,
      stopReason,
      losses: [...this.losses],
      evals: [...this.evals],
      lastStep,
      checkpointDir: lastCheckpoint,
      tokens,
      elapsedMs: performance.now() - runStarted,
    };
  }

  /** Frees the optimiser state (not the model, which the caller owns). */
  dispose(): void {
    this.optimizer.dispose();
  }

  private officialName(variableName: string): string {
    const name = this.officialNames.get(variableName);
    if (name === undefined) throw new ConfigError(`Trainer: got a gradient for variable '${variableName}', which is not a trained parameter`);
    return name;
  }

  /** The stop request, read through a method (a SIGINT handler sets it while `run` awaits). */
  private pendingStop(): StopReason | null {
    return this.stopRequest;
  }

  private checkpointNote(): string {
    return this.lastCheckpointStep === null ? '' : `; the last checkpoint (step ${this.lastCheckpointStep}) is left as it was`;
  }
}

/**
 * Trains a model in one call: builds a {@link Trainer}, resumes it if asked, runs it and frees the
 * optimiser state.
 *
 * @param model - the model (the caller disposes it)
 * @param data - training and validation batches, e.g. `prepareTextData(…)`
 * @param config - `totalSteps` and overrides (see {@link TrainConfig})
 * @param options - run options, plus `resumeFrom`: a checkpoint folder of the same run to continue
 * @returns the run's result
 * @throws see {@link Trainer.resume} and {@link Trainer.run}
 */
export async function train(
  model: DecoderLM,
  data: TrainingData,
  config: TrainConfigInput | TrainConfig,
  options: RunOptions & { readonly resumeFrom?: string } = {},
): Promise<TrainResult> {
  const trainer = new Trainer(model, data, config);
  try {
    if (options.resumeFrom !== undefined) await trainer.resume(options.resumeFrom);
    return await trainer.run(options);
  } finally {
    trainer.dispose();
  }
}
