/**
 * `@moepp/trainers`: training for the kit's decoder language models (dense, MoE, MoE++).
 *
 * - {@link Trainer} / {@link train}: the loop: gradient accumulation, clipping, AdamW, warm-up + cosine
 *   schedule, evaluation, `metrics.jsonl`, progress, atomic checkpoints, exact resume, NaN and leak guards;
 * - {@link AdamW}: decoupled weight decay with exportable state; {@link learningRateAt}: the schedule;
 *   {@link clipByGlobalNorm}, {@link globalNorm}, {@link clipScale}; {@link GradientAccumulator};
 * - {@link languageModelLoss}: cross-entropy + β·load balance + w·z-loss; {@link evaluate}: loss,
 *   perplexity, accuracy on fixed validation windows;
 * - {@link writeCheckpoint} / {@link loadCheckpoint}: the checkpoint folder.
 *
 * Shape legend: `B` batch, `T` sequence, `N = B·T` tokens, `V` vocabulary, `A` micro-batches per step,
 * `L_moe` MoE layers, `E` experts.
 *
 * @packageDocumentation
 */
export { AdamW, DEFAULT_ADAMW, defaultDecayRule, resolveAdamWConfig, type AdamWConfig, type AdamWState, type NamedArray, type OptimizedParameter } from './adamw.js';
export { learningRateAt, checkSchedule, type LearningRateSchedule } from './schedule.js';
export { clipByGlobalNorm, clipScale, globalNorm, type ClippedGradients } from './clip.js';
export { GradientAccumulator } from './accumulate.js';
export {
  DEFAULT_LOSS,
  crossEntropyLoss,
  languageModelLoss,
  resolveLossConfig,
  tokenCrossEntropy,
  type LossConfig,
  type LossInput,
  type LossTerms,
} from './loss.js';
export { evaluate, checkBatchTokens, type EvaluationResult } from './evaluate.js';
export { MetricsLog, readMetricsFile, type EvalRecord, type MetricsRecord, type StartRecord, type StepRecord } from './metrics.js';
export {
  PROGRESS_MODES,
  createProgressReporter,
  formatCount,
  formatEvalLine,
  formatStepLine,
  type ProgressMode,
  type ProgressOptions,
  type ProgressReporter,
  type ProgressStream,
} from './progress.js';
export {
  CHECKPOINT_FILES,
  TRAINER_STATE_FORMAT,
  TRAINER_STATE_VERSION,
  checkCheckpointModel,
  isCheckpointDir,
  loadCheckpoint,
  readTrainerState,
  resolveCheckpointDir,
  writeCheckpoint,
  type CheckpointContents,
  type CheckpointData,
  type LoadedCheckpoint,
  type CheckpointReason,
  type TrainHistory,
  type TrainerState,
} from './checkpoint.js';
export {
  RESUME_FIELDS,
  matchesPattern,
  resolveTrainConfig,
  resumeDifferences,
  type ScheduleSettings,
  type TrainConfig,
  type TrainConfigInput,
} from './config.js';
export { NonFiniteLossError, TensorLeakError, describeLossReport, nonFiniteVariables, type LossReport, type NonFiniteKind } from './guards.js';
export {
  Trainer,
  train,
  type CheckpointInfo,
  type RunOptions,
  type StopReason,
  type TrainBatchSource,
  type TrainHooks,
  type TrainResult,
  type TrainingData,
} from './trainer.js';
