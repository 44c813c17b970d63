/**
 * Seeded randomness. Every random number the kit draws (initial weights, router noise, data shuffles,
 * sampling) comes from a {@link SeededRandom}, so a run with the same seed gives the same numbers on
 * the same backend, and the generator's state can be saved in a checkpoint and restored.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber } from './errors.js';

/** The serialisable state of a {@link SeededRandom}: four 32-bit words and a cached normal deviate. */
export interface RandomState {
  /** The sfc32 state words, each an unsigned 32-bit integer. */
  readonly words: readonly [number, number, number, number];
  /** The second Box–Muller deviate, if one is waiting; `null` otherwise. */
  readonly spareNormal: number | null;
}

/**
 * A small, fast, seedable generator (sfc32, from PractRand) with normal deviates by Box–Muller.
 * Not cryptographic. Same seed, same sequence, on every platform.
 */
export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | null = null;

  /**
   * @param seed - any integer in [0, 2^32); different seeds give unrelated sequences
   * @throws {@link ConfigError} if the seed is not an integer in range
   */
  constructor(seed: number) {
    checkNumber('SeededRandom', 'seed', seed, { integer: true, min: 0, max: 2 ** 32 - 1 });
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.nextUint32();
  }

  /** Restores a generator from {@link SeededRandom.getState}'s output. */
  static fromState(state: RandomState): SeededRandom {
    const rng = new SeededRandom(0);
    rng.setState(state);
    return rng;
  }

  /** @returns the next unsigned 32-bit integer */
  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** @returns a uniform float in [0, 1) with 32 bits of randomness */
  next(): number {
    return this.nextUint32() / 4294967296;
  }

  /**
   * @param low - inclusive lower bound
   * @param high - exclusive upper bound
   * @returns a uniform float in [low, high)
   */
  uniform(low = 0, high = 1): number {
    return low + (high - low) * this.next();
  }

  /**
   * @param n - the number of values (a positive integer)
   * @returns a uniform integer in [0, n)
   */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /**
   * @param mean - the mean
   * @param std - the standard deviation
   * @returns a normal deviate (Box–Muller; the second deviate of each pair is cached)
   */
  normal(mean = 0, std = 1): number {
    if (this.spare !== null) {
      const z = this.spare;
      this.spare = null;
      return mean + std * z;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const radius = Math.sqrt(-2 * Math.log(u));
    this.spare = radius * Math.sin(2 * Math.PI * v);
    return mean + std * radius * Math.cos(2 * Math.PI * v);
  }

  /** Shuffles an array in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }

  /**
   * Derives an independent generator, e.g. one per layer, without disturbing reproducibility of the
   * parent beyond the one draw it takes.
   */
  fork(): SeededRandom {
    return new SeededRandom(this.nextUint32());
  }

  /** @returns a copy of the state, for checkpoints */
  getState(): RandomState {
    return { words: [this.a >>> 0, this.b >>> 0, this.c >>> 0, this.d >>> 0], spareNormal: this.spare };
  }

  /**
   * @param state - a state from {@link SeededRandom.getState}
   * @throws {@link ConfigError} if the state is malformed
   */
  setState(state: RandomState): void {
    if (!state || !Array.isArray(state.words) || state.words.length !== 4) {
      checkNumber('SeededRandom.setState', 'words.length', Array.isArray(state?.words) ? state.words.length : NaN, { min: 4, max: 4 });
    }
    state.words.forEach((w, i) => checkNumber('SeededRandom.setState', `words[${i}]`, w, { integer: true, min: 0, max: 2 ** 32 - 1 }));
    if (state.spareNormal !== null) checkNumber('SeededRandom.setState', 'spareNormal', state.spareNormal);
    [this.a, this.b, this.c, this.d] = state.words.map((w) => w | 0) as [number, number, number, number];
    this.spare = state.spareNormal;
  }
}

function sizeOf(op: string, shape: readonly number[]): number {
  shape.forEach((d, i) => checkNumber(op, `shape[${i}]`, d, { integer: true, min: 0 }));
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Fills a float32 tensor with normal deviates.
 *
 * @param shape - the tensor's shape
 * @param rng - the generator to draw from
 * @param std - the standard deviation (mean 0)
 * @returns a new float32 tensor of that shape
 */
export function randomNormal(shape: readonly number[], rng: SeededRandom, std = 1, mean = 0): tf.Tensor {
  const size = sizeOf('randomNormal', shape);
  checkNumber('randomNormal', 'std', std, { min: 0 });
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) values[i] = rng.normal(mean, std);
  return tf.tensor(values, [...shape], 'float32');
}

/**
 * Normal deviates redrawn until they fall within two standard deviations (as `torch.nn.init.trunc_normal_`
 * with `a = -2·std`, `b = 2·std`). The result's standard deviation is about 0.88·std.
 *
 * @param shape - the tensor's shape
 * @param rng - the generator to draw from
 * @param std - the standard deviation of the untruncated normal
 * @returns a new float32 tensor of that shape
 */
export function truncatedNormal(shape: readonly number[], rng: SeededRandom, std = 1): tf.Tensor {
  const size = sizeOf('truncatedNormal', shape);
  checkNumber('truncatedNormal', 'std', std, { min: 0 });
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    let z = rng.normal();
    while (Math.abs(z) > 2) z = rng.normal();
    values[i] = z * std;
  }
  return tf.tensor(values, [...shape], 'float32');
}

/**
 * Uniform values in [low, high).
 *
 * @param shape - the tensor's shape
 * @param rng - the generator to draw from
 * @returns a new float32 tensor of that shape
 */
export function randomUniform(shape: readonly number[], rng: SeededRandom, low = 0, high = 1): tf.Tensor {
  const size = sizeOf('randomUniform', shape);
  const values = new Float32Array(size);
  for (let i = 0; i < size; i++) values[i] = rng.uniform(low, high);
  return tf.tensor(values, [...shape], 'float32');
}

/**
 * Fan-in and fan-out of a weight. The default layout is `'inOut'` (`[in, out]`, as the kit's own
 * matmuls use); pass `'outIn'` for a PyTorch `Linear` weight (`[out, in]`).
 *
 * @param shape - the weight's shape; leading axes (convolution kernels) multiply both fans
 * @param layout - which of the last two axes is the input
 * @returns the fans
 */
export function fans(shape: readonly number[], layout: 'inOut' | 'outIn' = 'inOut'): { fanIn: number; fanOut: number } {
  if (shape.length < 2) {
    const n = shape[0] ?? 1;
    return { fanIn: n, fanOut: n };
  }
  const receptive = shape.slice(0, -2).reduce((a, b) => a * b, 1);
  const first = (shape[shape.length - 2] as number) * receptive;
  const second = (shape[shape.length - 1] as number) * receptive;
  return layout === 'inOut' ? { fanIn: first, fanOut: second } : { fanIn: second, fanOut: first };
}

/**
 * Kaiming (He) uniform initialisation: `U(-b, b)`, `b = gain·sqrt(3 / fanIn)`; gain defaults to
 * `sqrt(2)` (ReLU). PyTorch's `Linear` default is `b = 1/sqrt(fanIn)`;
 * pass `gain: 1 / Math.sqrt(3)` for that.
 *
 * @param shape - the weight's shape, `[in, out]` by default
 * @param rng - the generator to draw from
 * @returns a new float32 tensor
 */
export function kaimingUniform(
  shape: readonly number[],
  rng: SeededRandom,
  options: { gain?: number; layout?: 'inOut' | 'outIn' } = {},
): tf.Tensor {
  const { fanIn } = fans(shape, options.layout);
  const bound = (options.gain ?? Math.SQRT2) * Math.sqrt(3 / fanIn);
  return randomUniform(shape, rng, -bound, bound);
}

/**
 * Kaiming (He) normal initialisation: `N(0, gain² / fanIn)`, gain `sqrt(2)` by default.
 *
 * @param shape - the weight's shape, `[in, out]` by default
 * @param rng - the generator to draw from
 * @returns a new float32 tensor
 */
export function kaimingNormal(
  shape: readonly number[],
  rng: SeededRandom,
  options: { gain?: number; layout?: 'inOut' | 'outIn' } = {},
): tf.Tensor {
  const { fanIn } = fans(shape, options.layout);
  return randomNormal(shape, rng, (options.gain ?? Math.SQRT2) / Math.sqrt(fanIn));
}

/**
 * Xavier (Glorot) uniform initialisation: `U(-b, b)`, `b = gain·sqrt(6 / (fanIn + fanOut))`.
 *
 * @param shape - the weight's shape, `[in, out]` by default
 * @param rng - the generator to draw from
 * @returns a new float32 tensor
 */
export function xavierUniform(
  shape: readonly number[],
  rng: SeededRandom,
  options: { gain?: number; layout?: 'inOut' | 'outIn' } = {},
): tf.Tensor {
  const { fanIn, fanOut } = fans(shape, options.layout);
  const bound = (options.gain ?? 1) * Math.sqrt(6 / (fanIn + fanOut));
  return randomUniform(shape, rng, -bound, bound);
}

/**
 * Xavier (Glorot) normal initialisation: `N(0, gain² · 2 / (fanIn + fanOut))`.
 *
 * @param shape - the weight's shape, `[in, out]` by default
 * @param rng - the generator to draw from
 * @returns a new float32 tensor
 */
export function xavierNormal(
  shape: readonly number[],
  rng: SeededRandom,
  options: { gain?: number; layout?: 'inOut' | 'outIn' } = {},
): tf.Tensor {
  const { fanIn, fanOut } = fans(shape, options.layout);
  return randomNormal(shape, rng, (options.gain ?? 1) * Math.sqrt(2 / (fanIn + fanOut)));
}
