/**
 * The trainer's guards: it stops on a non-finite loss, gradient norm or weight (before the bad update is
 * applied or a bad checkpoint is written), and on a live tensor count that grows from step to step.
 */
import * as tf from '@tensorflow/tfjs';

/** The loss terms and settings of the step that failed. */
export interface LossReport {
  /** Total loss (NaN when it was not computed). */
  readonly loss: number;
  /** Cross-entropy. */
  readonly crossEntropy: number;
  /** Summed load-balance loss. */
  readonly loadBalance: number;
  /** Summed z-loss. */
  readonly zLoss: number;
  /** Global gradient norm before clipping (NaN when it was not computed). */
  readonly gradNorm: number;
  /** Learning rate of the step. */
  readonly lr: number;
}

/** What was found non-finite. */
export type NonFiniteKind = 'loss' | 'gradient' | 'weights';

/**
 * Thrown when training produces a NaN or infinite loss, gradient norm or weight. The failing update is
 * not applied and no checkpoint is written, so the last checkpoint on disk stays the last good one.
 */
export class NonFiniteLossError extends Error {
  /** Always `'NonFiniteLossError'`. */
  override readonly name = 'NonFiniteLossError';
  /**
   * @param kind - what was not finite
   * @param step - the 1-based step that failed
   * @param report - the loss terms of that step
   * @param message - the full message
   */
  constructor(
    readonly kind: NonFiniteKind,
    readonly step: number,
    readonly report: LossReport,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Thrown when the number of live tensors grows across training steps after the warm-up steps: some code
 * (a hook, a custom loss, a layer) creates tensors every step and never disposes them.
 */
export class TensorLeakError extends Error {
  /** Always `'TensorLeakError'`. */
  override readonly name = 'TensorLeakError';
  /**
   * @param step - the step after which the growth was seen
   * @param baseline - live tensors after the warm-up steps
   * @param current - live tensors now
   */
  constructor(
    readonly step: number,
    readonly baseline: number,
    readonly current: number,
  ) {
    super(
      `Trainer: ${current - baseline} tensor(s) leaked: ${current} live tensors after step ${step}, ${baseline} after the warm-up steps. ` +
        'Something creates tensors every step and never disposes them (a hook? wrap tensor code in tf.tidy)',
    );
  }
}

/**
 * @param report - loss terms
 * @returns `total 3.2100, cross-entropy 3.2000, load balance 1.0000, z-loss 0.0000, grad norm 0.53, lr 4.0e-4`
 */
export function describeLossReport(report: LossReport): string {
  const value = (x: number, digits = 4) => (Number.isFinite(x) ? x.toFixed(digits) : String(x));
  return (
    `total ${value(report.loss)}, cross-entropy ${value(report.crossEntropy)}, load balance ${value(report.loadBalance)}, ` +
    `z-loss ${value(report.zLoss)}, grad norm ${value(report.gradNorm, 3)}, lr ${report.lr.toExponential(1)}`
  );
}

/**
 * Finds the variables holding a NaN or an infinity.
 *
 * @param variables - named variables
 * @returns the names of those that are not all finite (empty when all are)
 */
export function nonFiniteVariables(variables: readonly { readonly name: string; readonly variable: tf.Variable }[]): string[] {
  if (variables.length === 0) return [];
  // sum(0 · w) is 0 when every element is finite and NaN otherwise (0·∞ = NaN); works on every backend.
  const sums = tf.tidy(() => tf.stack(variables.map(({ variable }) => tf.sum(tf.mul(variable, 0)))).dataSync()); // [P]
  return variables.filter((_, i) => !Number.isFinite(sums[i] as number)).map(({ name }) => name);
}
