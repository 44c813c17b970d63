/**
 * A heterogeneous pool of experts for one MoE / MoE++ layer, built from counts per kind and laid out
 * in the official MoE++ order `[ffn × n_ffn] + [constant × n_const] + [copy × n_copy] + [zero × n_zero]`
 * (the official `Experts` module; the zero expert is last, which the official gate rule relies on).
 */
import type * as tf from '@tensorflow/tfjs';
import { checkNumber, checkOneOf, ConfigError, describe, EXPERT_KINDS, type ExpertKind, type SeededRandom } from '@moepp/tensors-core';
import { checkPositiveInteger } from './common.js';
import { FFN_ACTIVATIONS, FfnExpert, type FfnActivation } from './ffn.js';
import type { Expert } from './types.js';
import { ConstantExpert, CopyExpert, ZeroExpert } from './zero-computation.js';

/** How many experts of each kind a pool holds. Absent kinds count 0. */
export type ExpertCounts = Readonly<Partial<Record<ExpertKind, number>>>;

/**
 * The number of constant experts from the MoE++ paper's Eq. 10 (arXiv 2410.07348, §4.3):
 *
 *     n_const = max(N_FFN / 4 − n_zero − n_copy, 1)
 *
 * `N_FFN / 4` is rounded down when `N_FFN` is not a multiple of 4 (the paper only uses multiples of 8).
 * Note the paper's own Table 2 uses 2 constant experts for 8 FFN experts (0.6B/(8+4)E), where Eq. 10
 * gives 1; it matches Table 2 for 16 (→ 2) and 32 (→ 6) FFN experts.
 *
 * @param counts - `ffn` (N_FFN), `zero` and `copy` (default 1 each, the paper's configs)
 * @returns `n_const`, at least 1
 * @throws ConfigError unless the counts are integers >= 0
 */
export function constantExpertCount(counts: { readonly ffn: number; readonly zero?: number; readonly copy?: number }): number {
  const op = 'constantExpertCount';
  const ffn = checkNumber(op, 'ffn', counts.ffn, { integer: true, min: 0 });
  const zero = checkNumber(op, 'zero', counts.zero ?? 1, { integer: true, min: 0 });
  const copy = checkNumber(op, 'copy', counts.copy ?? 1, { integer: true, min: 0 });
  return Math.max(Math.floor(ffn / 4) - zero - copy, 1);
}

/**
 * MoE++ expert counts for `ffn` FFN experts: one zero and one copy expert (unless given) and the
 * constant experts from {@link constantExpertCount} (Eq. 10).
 *
 * @param ffn - `N_FFN`
 * @param options - `zero` and `copy` counts, default 1 each
 * @returns counts for {@link createExpertPool}
 * @throws ConfigError unless the counts are integers >= 0
 */
export function moeppExpertCounts(ffn: number, options: { readonly zero?: number; readonly copy?: number } = {}): Required<ExpertCounts> {
  const zero = options.zero ?? 1;
  const copy = options.copy ?? 1;
  return { ffn, constant: constantExpertCount({ ffn, zero, copy }), copy, zero };
}

/** Configuration of {@link createExpertPool}. */
export interface ExpertPoolConfig {
  /** `D` (`hidden_size`). */
  readonly dim: number;
  /** `F` (`intermediate_size`); required when `counts.ffn > 0`. */
  readonly ffnDim?: number;
  /** Experts per kind, integers >= 0, at least one expert in total. */
  readonly counts: ExpertCounts;
  /** FFN activation. Default `'swiglu'` (the official MoE++ expert). */
  readonly activation?: FfnActivation;
  /** Std of the normal initialisation of every projection. Default 0.02. */
  readonly initializerRange?: number;
  /** Generator for all initial weights (drawn in pool order). */
  readonly rng: SeededRandom;
}

/** A layer's experts in the official order; see {@link createExpertPool}. */
export class ExpertPool {
  /** The experts, index = expert id the router uses. */
  readonly experts: readonly Expert[];
  /** The kind of each expert, the `expertKinds` a router takes. */
  readonly kinds: readonly ExpertKind[];
  /** Experts per kind (every kind present, 0 when absent). */
  readonly counts: Readonly<Record<ExpertKind, number>>;

  /**
   * @param experts - the experts, in routing order (use {@link createExpertPool} for the official order)
   * @throws ConfigError when the list is empty, widths differ or names repeat
   */
  constructor(experts: readonly Expert[]) {
    if (experts.length === 0) throw new ConfigError('ExpertPool: needs at least one expert, got 0');
    const dim = (experts[0] as Expert).dim;
    const names = new Set<string>();
    experts.forEach((expert, i) => {
      if (expert.dim !== dim) throw new ConfigError(`ExpertPool: expert ${i} ('${expert.name}') has dim ${expert.dim}, expert 0 has ${dim}`);
      if (names.has(expert.name)) throw new ConfigError(`ExpertPool: expert name '${expert.name}' is used twice`);
      names.add(expert.name);
    });
    this.experts = Object.freeze([...experts]);
    this.kinds = Object.freeze(experts.map((expert) => expert.kind));
    const counts = { ffn: 0, zero: 0, copy: 0, constant: 0 };
    for (const kind of this.kinds) counts[kind]++;
    this.counts = Object.freeze(counts);
  }

  /** `E`, the number of experts. */
  get numExperts(): number {
    return this.experts.length;
  }

  /** `D`, the token width. */
  get dim(): number {
    return (this.experts[0] as Expert).dim;
  }

  /**
   * @param kind - an expert kind
   * @returns the indices of the experts of that kind, ascending
   */
  indicesOf(kind: ExpertKind): number[] {
    return this.kinds.flatMap((k, i) => (k === kind ? [i] : []));
  }

  /** @returns the indices of the FFN experts */
  ffnIndices(): number[] {
    return this.indicesOf('ffn');
  }

  /** @returns the indices of the zero-computation experts (zero, copy, constant) */
  zeroComputationIndices(): number[] {
    return this.kinds.flatMap((k, i) => (k !== 'ffn' ? [i] : []));
  }

  /** @returns the total number of trainable parameters */
  parameterCount(): number {
    return this.experts.reduce((total, expert) => total + expert.parameterCount(), 0);
  }

  /** @returns every variable, keyed `'<expert name>.<local name>'`, e.g. `'ffn-0.upProj'` */
  weights(): Record<string, tf.Variable> {
    const all: Record<string, tf.Variable> = {};
    for (const expert of this.experts) {
      for (const [local, variable] of Object.entries(expert.weights)) all[`${expert.name}.${local}`] = variable;
    }
    return all;
  }

  /** Disposes every expert. */
  dispose(): void {
    for (const expert of this.experts) expert.dispose();
  }
}

/**
 * Builds a pool from counts, in the official order (FFN, constant, copy, zero), named `'ffn-0'`,
 * `'constant-0'`, `'copy-0'`, `'zero-0'`, …
 *
 * @param config - see {@link ExpertPoolConfig}
 * @returns the pool
 * @throws ConfigError for a count that is not an integer >= 0, an unknown kind, no experts at all,
 *   a missing or bad `ffnDim` when there are FFN experts, a bad `dim` or an unknown activation
 */
export function createExpertPool(config: ExpertPoolConfig): ExpertPool {
  const op = 'createExpertPool';
  const dim = checkPositiveInteger(op, 'dim', config.dim);
  const activation = checkOneOf(op, 'activation', config.activation ?? 'swiglu', FFN_ACTIVATIONS);
  if (typeof config.counts !== 'object' || config.counts === null) {
    throw new ConfigError(`${op}: 'counts' must be an object of expert counts per kind, got ${describe(config.counts)}`);
  }
  for (const key of Object.keys(config.counts)) {
    if (!(EXPERT_KINDS as readonly string[]).includes(key)) {
      throw new ConfigError(`${op}: 'counts' has unknown expert kind '${key}'; kinds are ${EXPERT_KINDS.map((k) => `'${k}'`).join(', ')}`);
    }
  }
  const count = (kind: ExpertKind): number => checkNumber(op, `counts.${kind}`, config.counts[kind] ?? 0, { integer: true, min: 0 });
  const counts = { ffn: count('ffn'), constant: count('constant'), copy: count('copy'), zero: count('zero') };
  const total = counts.ffn + counts.constant + counts.copy + counts.zero;
  if (total < 1) throw new ConfigError(`${op}: 'counts' must give at least one expert, got ${describe(config.counts)}`);
  const ffnDim = counts.ffn > 0 ? checkPositiveInteger(op, 'ffnDim', config.ffnDim) : 0;
  const initializerRange = checkNumber(op, 'initializerRange', config.initializerRange ?? 0.02, { min: 0 });

  const experts: Expert[] = [];
  for (let i = 0; i < counts.ffn; i++) {
    experts.push(new FfnExpert({ dim, ffnDim, activation, initializerRange, rng: config.rng, name: `ffn-${i}` }));
  }
  for (let i = 0; i < counts.constant; i++) {
    experts.push(new ConstantExpert({ dim, initializerRange, rng: config.rng, name: `constant-${i}` }));
  }
  for (let i = 0; i < counts.copy; i++) experts.push(new CopyExpert({ dim, name: `copy-${i}` }));
  for (let i = 0; i < counts.zero; i++) experts.push(new ZeroExpert({ dim, name: `zero-${i}` }));
  return new ExpertPool(experts);
}
