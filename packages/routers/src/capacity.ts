/**
 * Expert capacity for token-choice routers: how many assignments each expert may take, and which
 * assignments are dropped when an expert overflows.
 *
 * Counting convention: capacity is counted in **assignments** (token × slot pairs). With `N` tokens and
 * top-`K` routing there are `T = N·K` assignments, so a capacity factor of 1 gives every expert exactly
 * its share of the slots. `N` is the static number of positions in the batch, padding included (as
 * GShard and Switch do); padding itself never takes capacity.
 *
 * Dropped assignments get `keepMask = 0` and combine weight 0: the expert never sees the token, and the
 * token's MoE output lacks that expert's term (with every assignment dropped the MoE output is 0 and the
 * token passes on through the residual connection).
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkOneOf, ConfigError, describe, isZeroComputation, type ExpertKind } from '@moepp/tensors-core';
import { oneHotFloat } from './common.js';

/**
 * How much each expert may take.
 *
 * - `dropless`: no limit (the official MoE++ inference code; the default everywhere).
 * - `uniform`: every expert takes `C = ceil(capacityFactor · N·K / E)` assignments (Switch Transformer,
 *   Fedus et al. 2021, §2.2; GShard).
 * - `heterogeneous`: MoE++ Eq. 8 (arXiv 2410.07348) with `T = N·K` assignments:
 *   FFN experts `C = ceil(γ·τ·T / (τ·N_ffn + N_zc))`, zero-computation experts
 *   `C = ceil(γ·T / (τ·N_ffn + N_zc))`. The paper does not say whether `T` counts tokens or token×K
 *   slots; only slots make `Σ_i C_i = γ·T` hold (before rounding up), so slots it is. With `τ = 1` this is `uniform`.
 */
export type CapacityConfig =
  | {
      /** No capacity limit. */
      readonly mode: 'dropless';
    }
  | {
      /** Same capacity for every expert. */
      readonly mode: 'uniform';
      /** `γ >= 0`; 0 is a value (every assignment dropped). Switch uses 1.0–1.25. */
      readonly capacityFactor: number;
    }
  | {
      /** Eq. 8 capacities by expert kind. */
      readonly mode: 'heterogeneous';
      /** `γ >= 0` of Eq. 8; the paper uses 1.1. */
      readonly capacityFactor: number;
      /** `τ >= 0` of Eq. 7–8; the paper uses 0.75. Use the same value as the load-balance loss. */
      readonly tau: number;
    };

/**
 * Which assignments win when an expert overflows. Within one expert, assignments are served in this
 * order until its capacity is used up; the rest are dropped.
 *
 * - `slot-major` (default): every token's first choice before any token's second choice, and within a
 *   slot, earlier tokens first (GShard / Switch / ST-MoE behaviour: a token loses its second expert before
 *   another token loses its first).
 * - `token-major`: in token order, each token's slots in gate order (token 0 slot 0, token 0 slot 1,
 *   token 1 slot 0, …). Later tokens are dropped first.
 */
export type CapacityPriority = 'slot-major' | 'token-major';

/** The accepted {@link CapacityConfig} modes. */
export const CAPACITY_MODES = ['dropless', 'uniform', 'heterogeneous'] as const;

/** The accepted {@link CapacityPriority} values. */
export const CAPACITY_PRIORITIES: readonly CapacityPriority[] = ['slot-major', 'token-major'];

/**
 * Validates a capacity config (0 is a value, negatives are errors).
 *
 * @param op - the component name for errors
 * @param config - the config given (default `{ mode: 'dropless' }`)
 * @returns the config
 * @throws ConfigError for an unknown mode, a negative or non-finite `capacityFactor` or `tau`
 */
export function checkCapacityConfig(op: string, config: CapacityConfig | undefined): CapacityConfig {
  if (config === undefined) return { mode: 'dropless' };
  if (typeof config !== 'object' || config === null) {
    throw new ConfigError(`${op}: 'capacity' must be an object with a 'mode', got ${describe(config)}`);
  }
  const mode = checkOneOf(op, 'capacity.mode', config.mode, CAPACITY_MODES);
  if (mode === 'dropless') return { mode };
  const capacityFactor = checkNumber(op, 'capacity.capacityFactor', (config as { capacityFactor?: unknown }).capacityFactor, { min: 0 });
  if (mode === 'uniform') return { mode, capacityFactor };
  const tau = checkNumber(op, 'capacity.tau', (config as { tau?: unknown }).tau, { min: 0 });
  return { mode, capacityFactor, tau };
}

/**
 * Per-expert capacities for a batch.
 *
 * @param config - see {@link CapacityConfig}
 * @param numTokens - `N`, positions in the batch (padding included)
 * @param topK - `K`
 * @param expertKinds - the kind of each of the `E` experts (`heterogeneous` needs it)
 * @returns `C_e` for each expert, or `null` for `dropless`
 * @throws ConfigError for `heterogeneous` when `τ·N_ffn + N_zc` is 0
 */
export function expertCapacities(
  config: CapacityConfig,
  numTokens: number,
  topK: number,
  expertKinds: readonly ExpertKind[],
): number[] | null {
  const numExperts = expertKinds.length;
  const slots = numTokens * topK; // T = N·K assignments
  switch (config.mode) {
    case 'dropless':
      return null;
    case 'uniform': {
      const capacity = Math.ceil((config.capacityFactor * slots) / numExperts);
      return new Array<number>(numExperts).fill(capacity);
    }
    case 'heterogeneous': {
      const numZeroComputation = expertKinds.filter(isZeroComputation).length;
      const numFfn = numExperts - numZeroComputation;
      const denominator = config.tau * numFfn + numZeroComputation; // τ·N_ffn + N_zc
      if (!(denominator > 0)) {
        throw new ConfigError(
          `expertCapacities: heterogeneous capacity needs tau·N_ffn + N_zc > 0, got tau ${config.tau} with ${numFfn} FFN and ${numZeroComputation} zero-computation experts`,
        );
      }
      const ffnCapacity = Math.ceil((config.capacityFactor * config.tau * slots) / denominator);
      const zcCapacity = Math.ceil((config.capacityFactor * slots) / denominator);
      return expertKinds.map((kind) => (isZeroComputation(kind) ? zcCapacity : ffnCapacity));
    }
  }
}

/**
 * Which assignments survive the expert capacities. No gradient (indices only).
 *
 * @param expertIndices - `[N, K]` int32, the experts chosen per token (distinct within a row)
 * @param numExperts - `E`
 * @param capacities - `C_e` per expert, or `null` for dropless
 * @param options - `tokenMask` `[N]` float32 (padding is never kept and takes no capacity) and the
 *   {@link CapacityPriority} (default `slot-major`)
 * @returns `[N, K]` float32, 1 where the assignment is kept
 */
export function capacityKeepMask(
  expertIndices: tf.Tensor2D,
  numExperts: number,
  capacities: readonly number[] | null,
  options: { readonly tokenMask?: tf.Tensor1D; readonly priority?: CapacityPriority } = {},
): tf.Tensor2D {
  return tf.tidy(() => {
    const [numTokens, topK] = expertIndices.shape;
    if (capacities === null && options.tokenMask === undefined) return tf.ones([numTokens, topK]) as tf.Tensor2D; // dropless, no padding
    const realTokens = options.tokenMask ?? tf.ones([numTokens]); // [N]
    const realAssignments = tf.tile(tf.expandDims(realTokens, 1), [1, topK]) as tf.Tensor2D; // [N, K]
    if (capacities === null) return realAssignments;

    // [N, K, E] one-hot of the assignments, padding rows zeroed so they take no capacity.
    const assignments = tf.mul(oneHotFloat(expertIndices, numExperts), tf.reshape(realTokens, [numTokens, 1, 1]));
    const slotMajor = (options.priority ?? 'slot-major') === 'slot-major';
    // Flatten to [A, E] in priority order, A = N·K.
    const ordered = (slotMajor ? tf.transpose(assignments, [1, 0, 2]) : assignments).reshape([numTokens * topK, numExperts]);
    // Position of each assignment in its expert's queue: earlier assignments to the same expert.
    const earlier = tf.cumsum(ordered, 0, true); // [A, E]
    const position = tf.sum(tf.mul(earlier, ordered), 1); // [A]
    const capacity = tf.sum(tf.mul(ordered, tf.tensor1d([...capacities], 'float32')), 1); // [A]
    const assigned = tf.sum(ordered, 1); // [A] 1 for a real assignment
    const keep = tf.mul(tf.cast(tf.less(position, capacity), 'float32'), assigned); // [A]
    const keepOrdered = slotMajor ? tf.transpose(keep.reshape([topK, numTokens])) : keep.reshape([numTokens, topK]);
    return keepOrdered as tf.Tensor2D;
  });
}
