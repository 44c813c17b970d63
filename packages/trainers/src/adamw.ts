/**
 * AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay
 * Regularization", ICLR 2019, https://arxiv.org/abs/1711.05101), in the form PyTorch's `torch.optim.AdamW`
 * computes it, over `tf.Variable`s. The MoE++ paper trains with AdamW, weight decay 0.1.
 *
 * For each parameter `w` with gradient `g` at update `t = 1, 2, …` and learning rate `lr`:
 *
 *     m  = β1 · m + (1 − β1) · g                         first moment   (PyTorch `exp_avg`)
 *     v  = β2 · v + (1 − β2) · g²                        second moment  (PyTorch `exp_avg_sq`)
 *     w  = w · (1 − lr · λ) − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
 *
 * The decay `w -= lr·λ·w` is decoupled from the gradient (it never enters `m` or `v`) and scaled by the
 * scheduled learning rate, as in PyTorch (the paper's original multiplies λ by the schedule factor only).
 *
 * Which parameters decay ({@link defaultDecayRule}): every parameter of rank >= 2 (linear maps, expert
 * weights, router weights, embeddings: nanoGPT's rule); no decay for rank 0 and 1 (RMSNorm weights, the
 * constant experts' vectors `v`, which act as biases). Callers can exclude more by name.
 *
 * A parameter whose gradient is missing in a step (an expert that received no token) is updated with a
 * zero gradient: its moments decay, its momentum still moves it, and weight decay applies. Mathematically
 * that is its gradient; PyTorch would instead skip a parameter whose `.grad` is `None`.
 *
 * Each parameter's update is one `adamwUpdate` op of `@moepp/tensors-core` (one native kernel on
 * accelerated wasm, twelve tfjs ops otherwise; both round every operation to float32 in the same order).
 *
 * State: two float32 moment tensors per parameter (kept as non-trainable `tf.Variable`s, created once, so
 * the live tensor count stays flat) and the step count. {@link AdamW.exportState} /
 * {@link AdamW.importState} move it in and out as named float32 arrays keyed
 * `<official parameter name>.exp_avg` and `.exp_avg_sq`, in the kit's (tfjs) layout.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError, adamwUpdate, checkNumber } from '@moepp/tensors-core';

/** Hyper-parameters of {@link AdamW}. */
export interface AdamWConfig {
  /** β1, decay of the first moment. Default 0.9. */
  readonly beta1: number;
  /** β2, decay of the second moment. Default 0.95 (LLaMA's and most LLM pre-training; moepp.md does not give it). */
  readonly beta2: number;
  /** ε, added to the denominator. Default 1e-8 (PyTorch). */
  readonly epsilon: number;
  /** λ, decoupled weight decay, multiplied by the learning rate. Default 0.1 (MoE++ paper). */
  readonly weightDecay: number;
}

/** Defaults of {@link AdamWConfig}. */
export const DEFAULT_ADAMW: AdamWConfig = Object.freeze({ beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1 });

/** One parameter the optimiser updates. */
export interface OptimizedParameter {
  /** The official name (e.g. `model.layers.0.self_attn.q_proj.weight`); keys gradients and state. */
  readonly name: string;
  /** The variable to update. */
  readonly variable: tf.Variable;
  /** Whether weight decay applies (see {@link defaultDecayRule}). */
  readonly decay: boolean;
}

/** One state tensor: a float32 array in row-major order with its shape. */
export interface NamedArray {
  /** The shape (the kit's tfjs layout). */
  readonly shape: readonly number[];
  /** The values, `product(shape)` of them. */
  readonly data: Float32Array;
}

/** The exportable state of an {@link AdamW}. */
export interface AdamWState {
  /** Updates applied so far (t of the last update; 0 before the first). */
  readonly step: number;
  /** `<name>.exp_avg` and `<name>.exp_avg_sq` for every parameter. */
  readonly tensors: ReadonlyMap<string, NamedArray>;
}

/**
 * The kit's default weight-decay rule: decay every parameter of rank >= 2 (matrices: linear maps,
 * experts, routers, embeddings), none of rank 0 or 1 (norm weights, vectors acting as biases).
 *
 * @param name - the official parameter name (unused by the default rule; custom rules may use it)
 * @param shape - the parameter's shape
 * @returns true if weight decay applies
 */
export function defaultDecayRule(name: string, shape: readonly number[]): boolean {
  void name;
  return shape.length >= 2;
}

/**
 * Resolves and validates AdamW hyper-parameters.
 *
 * @param input - any subset of the fields; the rest take {@link DEFAULT_ADAMW}
 * @param op - the caller, for error messages
 * @returns the complete, frozen config
 * @throws `ConfigError` naming the field when a value is out of range (β in [0, 1), ε > 0, λ >= 0)
 */
export function resolveAdamWConfig(input: Partial<AdamWConfig> = {}, op = 'AdamW'): AdamWConfig {
  const merged = { ...DEFAULT_ADAMW, ...input };
  const beta = (field: 'beta1' | 'beta2') => {
    const value = checkNumber(op, field, merged[field], { min: 0 });
    if (value >= 1) throw new ConfigError(`${op}: '${field}' must be < 1, got ${value}`);
    return value;
  };
  return Object.freeze({
    beta1: beta('beta1'),
    beta2: beta('beta2'),
    epsilon: checkNumber(op, 'epsilon', merged.epsilon, { greaterThan: 0 }),
    weightDecay: checkNumber(op, 'weightDecay', merged.weightDecay, { min: 0 }),
  });
}

interface Slot {
  readonly parameter: OptimizedParameter;
  readonly firstMoment: tf.Variable; // same shape as the parameter, float32
  readonly secondMoment: tf.Variable; // same shape as the parameter, float32
}

/**
 * AdamW over a fixed list of named variables.
 *
 * @example
 * ```ts
 * const optimizer = new AdamW(model.parameters().map((p) => ({ name: p.name, variable: p.variable, decay: defaultDecayRule(p.name, p.variable.shape) })));
 * optimizer.applyGradients(gradientsByName, 5e-4);
 * ```
 */
export class AdamW {
  /** The hyper-parameters. */
  readonly config: AdamWConfig;
  private readonly slots: Map<string, Slot>;
  private steps = 0;

  /**
   * @param parameters - the parameters to update, with unique names
   * @param config - hyper-parameters; defaults {@link DEFAULT_ADAMW}
   * @throws `ConfigError` for a repeated name, a non-float32 variable or an invalid hyper-parameter
   */
  constructor(parameters: readonly OptimizedParameter[], config: Partial<AdamWConfig> = {}) {
    this.config = resolveAdamWConfig(config);
    this.slots = new Map();
    for (const parameter of parameters) {
      if (this.slots.has(parameter.name)) throw new ConfigError(`AdamW: parameter name '${parameter.name}' appears twice`);
      if (parameter.variable.dtype !== 'float32') {
        throw new ConfigError(`AdamW: parameter '${parameter.name}' must be float32, got ${parameter.variable.dtype}`);
      }
      this.slots.set(parameter.name, {
        parameter,
        // tidy frees the zeros the variables were copied from (variables themselves are not tidied).
        firstMoment: tf.tidy(() => tf.variable(tf.zeros(parameter.variable.shape), false)),
        secondMoment: tf.tidy(() => tf.variable(tf.zeros(parameter.variable.shape), false)),
      });
    }
  }

  /** @returns the number of updates applied so far */
  get step(): number {
    return this.steps;
  }

  /** @returns the names of the parameters, in the order given */
  get parameterNames(): string[] {
    return [...this.slots.keys()];
  }

  /**
   * Applies one update to every parameter.
   *
   * @param gradients - gradients by parameter name, each the shape of its parameter; a missing name
   *   counts as a zero gradient; not disposed
   * @param learningRate - lr of this update (from the schedule), >= 0
   * @param options - `gradientScale`: every gradient is multiplied by it first (gradient clipping's
   *   factor, see `clipScale`); default 1
   * @throws `ConfigError` for a gradient under an unknown name, with the wrong shape, a bad learning rate
   *   or a bad gradient scale
   */
  applyGradients(gradients: ReadonlyMap<string, tf.Tensor>, learningRate: number, options: { readonly gradientScale?: number } = {}): void {
    const lr = checkNumber('AdamW.applyGradients', 'learningRate', learningRate, { min: 0 });
    const gradientScale = checkNumber('AdamW.applyGradients', 'gradientScale', options.gradientScale ?? 1, { min: 0 });
    for (const [name, gradient] of gradients) {
      const slot = this.slots.get(name);
      if (!slot) throw new ConfigError(`AdamW.applyGradients: no parameter named '${name}'`);
      const expected = slot.parameter.variable.shape;
      if (gradient.shape.length !== expected.length || gradient.shape.some((d, i) => d !== expected[i])) {
        throw new ConfigError(
          `AdamW.applyGradients: gradient of '${name}' must have shape [${expected.join(', ')}], got [${gradient.shape.join(', ')}]`,
        );
      }
    }
    const { beta1, beta2, epsilon, weightDecay } = this.config;
    const t = this.steps + 1;
    // Scalars in float64 on the host, as PyTorch computes them in Python floats.
    const stepSize = lr / (1 - beta1 ** t);
    const inverseRootCorrection2 = 1 / Math.sqrt(1 - beta2 ** t);
    for (const [name, slot] of this.slots) {
      const gradient = gradients.get(name) ?? null;
      const decayFactor = slot.parameter.decay ? 1 - lr * weightDecay : 1;
      tf.tidy(() => {
        const weight = slot.parameter.variable;
        const g = gradient ?? tf.zerosLike(weight);
        // One fused kernel per parameter when natively accelerated, the same formula in tfjs ops otherwise.
        const updated = adamwUpdate(weight, g, slot.firstMoment, slot.secondMoment, {
          beta1,
          beta2,
          epsilon,
          stepSize,
          inverseRootCorrection2,
          decayFactor,
          gradientScale,
        });
        slot.firstMoment.assign(updated.firstMoment);
        slot.secondMoment.assign(updated.secondMoment);
        weight.assign(updated.weight);
      });
    }
    this.steps = t;
  }

  /**
   * Copies the state out (moments read back to the host).
   *
   * @returns the step and, per parameter, `<name>.exp_avg` and `<name>.exp_avg_sq`
   */
  exportState(): AdamWState {
    const tensors = new Map<string, NamedArray>();
    for (const [name, slot] of this.slots) {
      tensors.set(`${name}.exp_avg`, { shape: [...slot.firstMoment.shape], data: Float32Array.from(slot.firstMoment.dataSync()) });
      tensors.set(`${name}.exp_avg_sq`, { shape: [...slot.secondMoment.shape], data: Float32Array.from(slot.secondMoment.dataSync()) });
    }
    return { step: this.steps, tensors };
  }

  /**
   * Replaces the state. Everything is validated before anything is assigned, so a bad state leaves the
   * optimiser as it was.
   *
   * @param state - from {@link AdamW.exportState} (possibly through a file)
   * @param source - names the origin (a file path) in error messages
   * @throws `ConfigError` naming the source and the tensor when a tensor is missing, unexpected,
   *   has the wrong shape or length, or the step is not an integer >= 0
   */
  importState(state: AdamWState, source = 'optimizer state'): void {
    const step = checkNumber(`AdamW.importState (${source})`, 'step', state?.step, { integer: true, min: 0 });
    const expected = new Set<string>();
    const assignments: [tf.Variable, NamedArray][] = [];
    for (const [name, slot] of this.slots) {
      for (const [suffix, target] of [['exp_avg', slot.firstMoment], ['exp_avg_sq', slot.secondMoment]] as const) {
        const key = `${name}.${suffix}`;
        expected.add(key);
        const array = state.tensors.get(key);
        if (!array) throw new ConfigError(`${source}: optimizer tensor '${key}' is missing`);
        const shape = target.shape;
        const size = shape.reduce((a, b) => a * b, 1);
        if (array.shape.length !== shape.length || array.shape.some((d, i) => d !== shape[i]) || array.data.length !== size) {
          throw new ConfigError(
            `${source}: optimizer tensor '${key}' must have shape [${shape.join(', ')}], got [${array.shape.join(', ')}] with ${array.data.length} values`,
          );
        }
        assignments.push([target, array]);
      }
    }
    const unexpected = [...state.tensors.keys()].filter((key) => !expected.has(key));
    if (unexpected.length > 0) {
      throw new ConfigError(
        `${source}: ${unexpected.length} optimizer tensor(s) match no trainable parameter, e.g. '${unexpected.slice(0, 3).join("', '")}'`,
      );
    }
    for (const [target, array] of assignments) {
      tf.tidy(() => target.assign(tf.tensor(array.data, target.shape, 'float32')));
    }
    this.steps = step;
  }

  /** Frees the moment tensors (not the parameters). */
  dispose(): void {
    for (const slot of this.slots.values()) {
      slot.firstMoment.dispose();
      slot.secondMoment.dispose();
    }
    this.slots.clear();
  }
}
