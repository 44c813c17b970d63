/**
 * The learning-rate schedule: linear warm-up, then cosine decay from the peak to a minimum
 * (the MoE++ paper, §4 / moepp.md §4: AdamW, LR 5e-4 -> 5e-5 with warm-up). A pure function of the step.
 *
 * Steps are 0-based: step `s` is the (s+1)-th optimiser update of a run of `S = totalSteps` updates,
 * `W = warmupSteps`.
 *
 *     s < W:          lr = peak · (s + 1) / (W + 1)                         rises towards the peak
 *     W <= s < S:     lr = min + (peak − min) · ½ (1 + cos(π · p)),     p = (s − W) / (S − 1 − W)
 *     s >= S:         lr = min
 *
 * So the peak is reached exactly at step W (the first update after the warm-up), the cosine reaches the
 * minimum exactly at the last step S − 1, and the middle of the decay, `s = W + (S − 1 − W) / 2`, gets
 * `(peak + min) / 2`. No step gets a learning rate of 0 (nanoGPT's convention). With `W = 0` the first
 * update uses the peak. If the decay phase is a single step (`S − 1 = W`), that step uses the peak.
 */
import { ConfigError, checkNumber } from '@moepp/tensors-core';

/** A warm-up + cosine schedule. */
export interface LearningRateSchedule {
  /** The peak learning rate, reached at the end of the warm-up. Paper: 5e-4. */
  readonly peakLr: number;
  /** The final learning rate, reached at the last step. Paper: 5e-5. Must be `<= peakLr`. */
  readonly minLr: number;
  /** W, steps of linear warm-up (an integer, `0 <= W < S`). The paper does not give its value. */
  readonly warmupSteps: number;
  /** S, the optimiser steps of the whole run (an integer >= 1). */
  readonly totalSteps: number;
}

/**
 * Validates a schedule.
 *
 * @param schedule - the schedule
 * @param op - the caller, for error messages
 * @returns the same schedule
 * @throws `ConfigError` naming the field when a value is missing, not finite, out of range, or
 *   `minLr > peakLr`, or `warmupSteps >= totalSteps`
 */
export function checkSchedule(schedule: LearningRateSchedule, op = 'learningRateAt'): LearningRateSchedule {
  const peak = checkNumber(op, 'peakLr', schedule?.peakLr, { min: 0 });
  checkNumber(op, 'minLr', schedule.minLr, { min: 0, max: peak });
  const total = checkNumber(op, 'totalSteps', schedule.totalSteps, { integer: true, min: 1 });
  const warmup = checkNumber(op, 'warmupSteps', schedule.warmupSteps, { integer: true, min: 0 });
  if (warmup >= total) {
    throw new ConfigError(`${op}: 'warmupSteps' must be < totalSteps ${total}, got ${warmup}`);
  }
  return schedule;
}

/**
 * The learning rate of one optimiser step.
 *
 * @param step - s, the 0-based index of the update (an integer >= 0)
 * @param schedule - peak, minimum, warm-up and total steps
 * @returns the learning rate for that update
 * @throws `ConfigError` for a negative or fractional step or an invalid schedule
 */
export function learningRateAt(step: number, schedule: LearningRateSchedule): number {
  checkNumber('learningRateAt', 'step', step, { integer: true, min: 0 });
  const { peakLr, minLr, warmupSteps, totalSteps } = checkSchedule(schedule);
  if (step < warmupSteps) return (peakLr * (step + 1)) / (warmupSteps + 1);
  if (step >= totalSteps) return minLr;
  const decaySteps = totalSteps - 1 - warmupSteps;
  if (decaySteps <= 0) return peakLr;
  const progress = (step - warmupSteps) / decaySteps; // in [0, 1]
  return minLr + (peakLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
}
