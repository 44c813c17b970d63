/**
 * Choosing the next token from a language model's logits: greedy decoding, or sampling with
 * temperature, top-k (Fan et al. 2018, https://arxiv.org/abs/1805.04833) and nucleus / top-p
 * filtering (Holtzman et al. 2020, https://arxiv.org/abs/1904.09751).
 *
 * Pure functions over one position's logits (`float32 [V]`, V the vocabulary size); the generate loop
 * reads the last position back from the model and calls {@link sampleToken}. The filters apply in the
 * order Hugging Face's `generate` applies them: temperature, then top-k, then top-p on the
 * renormalised top-k distribution. All arithmetic after reading the logits is float64.
 */
import { checkNumber, checkOneOf, ConfigError, ShapeError, describe, type SeededRandom } from '@moepp/tensors-core';

/** Always pick the most likely token (argmax; the lowest index wins a tie). Draws no random numbers. */
export interface GreedyOptions {
  readonly strategy: 'greedy';
}

/** Draw a token from the softmax of the (scaled, filtered) logits. Draws exactly one random number. */
export interface SampleOptions {
  readonly strategy: 'sample';
  /**
   * Divides the logits before the softmax. Default 1. Must be > 0: below 1 sharpens the distribution,
   * above 1 flattens it; for the limit 0 use `{ strategy: 'greedy' }`.
   */
  readonly temperature?: number;
  /**
   * Keep only the `topK` most likely tokens (an integer in [1, V]; ties at the cut go to the lower
   * index, so `topK: 1` always equals greedy). Default: no top-k filter.
   */
  readonly topK?: number;
  /**
   * Nucleus filter, in (0, 1]: keep the smallest set of most likely tokens whose probability reaches
   * `topP` (a token stays if the tokens ranked above it hold less than `topP`; a slack of 1e-12
   * absorbs rounding at exact boundaries). The most likely token always stays. Default 1: no filter.
   */
  readonly topP?: number;
}

/** How {@link sampleToken} chooses a token. */
export type SamplingOptions = GreedyOptions | SampleOptions;

/** Relative slack for the nucleus boundary, so that a cumulative mass equal to topP up to rounding counts as reaching it. */
const TOP_P_SLACK = 1e-12;

/** Unnormalised float64 weights after temperature and filters, or the greedy choice. */
type Weights = { readonly greedyIndex: number } | { readonly weights: Float64Array; readonly total: number };

/**
 * Chooses the next token.
 *
 * @param logits - `float32 [V]`: one position's logits; `-Infinity` masks a token out
 * @param options - `{ strategy: 'greedy' }` or `{ strategy: 'sample', temperature?, topK?, topP? }`
 * @param rng - the generator to draw from; `'sample'` takes exactly one `rng.next()`, `'greedy'` none,
 *   so a seeded generate loop is reproducible
 * @returns the token index, in [0, V)
 * @throws `ShapeError` for empty logits
 * @throws `ConfigError` naming the field for a bad option (temperature <= 0, topK outside [1, V],
 *   topP outside (0, 1], an unknown strategy, or sampling fields given with `'greedy'`), for a NaN or
 *   +Infinity logit, or when every logit is -Infinity
 */
export function sampleToken(logits: Float32Array, options: SamplingOptions, rng: SeededRandom): number {
  const result = filteredWeights('sampleToken', logits, options);
  if ('greedyIndex' in result) return result.greedyIndex;
  const { weights, total } = result;
  // Walk the weights in index order, the order `total` was summed in, so the running sum reaches
  // exactly `total` and `target < total` always lands on a token with positive weight.
  const target = rng.next() * total;
  let cumulative = 0;
  let lastPositive = -1;
  for (let token = 0; token < weights.length; token++) {
    const weight = weights[token] as number;
    if (weight === 0) continue;
    cumulative += weight;
    lastPositive = token;
    if (cumulative > target) return token;
  }
  return lastPositive; // unreachable by the argument above; kept as a guard
}

/**
 * The distribution {@link sampleToken} draws from, for inspection and tests: softmax of the scaled
 * logits with filtered tokens set to 0 and the rest renormalised; for `'greedy'`, one-hot at the argmax.
 *
 * @param logits - `float32 [V]`
 * @param options - as for {@link sampleToken}
 * @returns `float64 [V]`, non-negative, summing to 1
 * @throws `ShapeError` for empty logits
 * @throws `ConfigError` as {@link sampleToken} does
 */
export function samplingProbabilities(logits: Float32Array, options: SamplingOptions): Float64Array {
  const result = filteredWeights('samplingProbabilities', logits, options);
  if ('greedyIndex' in result) {
    const oneHot = new Float64Array(logits.length);
    oneHot[result.greedyIndex] = 1;
    return oneHot;
  }
  return result.weights.map((weight) => weight / result.total);
}

/** Validates everything, then applies temperature, top-k and top-p. */
function filteredWeights(op: string, logits: Float32Array, options: SamplingOptions): Weights {
  const vocabSize = checkLogits(op, logits);
  if (typeof options !== 'object' || options === null) {
    throw new ConfigError(`${op}: 'options' must be { strategy: 'greedy' } or { strategy: 'sample', ... }, got ${describe(options)}`);
  }
  const strategy = checkOneOf(op, 'strategy', options.strategy, ['greedy', 'sample']);
  if (strategy === 'greedy') {
    for (const field of ['temperature', 'topK', 'topP'] as const) {
      if ((options as Partial<SampleOptions>)[field] !== undefined) {
        throw new ConfigError(`${op}: '${field}' only applies to strategy 'sample', but strategy is 'greedy'`);
      }
    }
    return { greedyIndex: argmax(logits) };
  }

  const { temperature = 1, topK, topP } = options as SampleOptions;
  if (temperature === 0) {
    throw new ConfigError(`${op}: 'temperature' must be > 0, got 0; for deterministic decoding use { strategy: 'greedy' }`);
  }
  checkNumber(op, 'temperature', temperature, { greaterThan: 0 });
  if (topK !== undefined) checkNumber(op, 'topK', topK, { integer: true, min: 1, max: vocabSize });
  if (topP !== undefined) checkNumber(op, 'topP', topP, { greaterThan: 0, max: 1 });

  // softmax((logits - max) / T): subtracting the max first keeps every exponent <= 0, and dividing a
  // difference of two float32 values cannot overflow where `logits / T` could for a tiny T.
  const maxLogit = logits[argmax(logits)] as number;
  const weights = new Float64Array(vocabSize); // [V] float64, exp((l - max) / T); masked tokens 0
  for (let token = 0; token < vocabSize; token++) {
    weights[token] = Math.exp(((logits[token] as number) - maxLogit) / temperature);
  }

  const keepTopK = topK !== undefined && topK < vocabSize;
  const keepTopP = topP !== undefined && topP < 1;
  if (keepTopK || keepTopP) {
    // Tokens from most to least likely; ties in the lower index first, as greedy breaks them.
    const ranked = new Uint32Array(vocabSize).map((_, token) => token); // [V]
    ranked.sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b);
    let kept = vocabSize;
    if (keepTopK) kept = topK;
    if (keepTopP) {
      let keptMass = 0;
      for (let rank = 0; rank < kept; rank++) keptMass += weights[ranked[rank] as number] as number;
      const threshold = (topP - TOP_P_SLACK) * keptMass;
      let massAbove = 0;
      let rank = 0;
      while (rank < kept && massAbove < threshold) massAbove += weights[ranked[rank++] as number] as number;
      kept = Math.max(rank, 1);
    }
    for (let rank = kept; rank < vocabSize; rank++) weights[ranked[rank] as number] = 0;
  }

  let total = 0;
  for (let token = 0; token < vocabSize; token++) total += weights[token] as number;
  return { weights, total };
}

/** Checks that logits are non-empty and each finite or -Infinity, with at least one finite; returns V. */
function checkLogits(op: string, logits: Float32Array): number {
  if (!(logits instanceof Float32Array) || logits.length === 0) {
    const shape = logits instanceof Float32Array ? '[0]' : describe(logits);
    throw new ShapeError(`${op}: argument 'logits' must be a non-empty Float32Array [V], got ${shape}`);
  }
  let finite = 0;
  for (let token = 0; token < logits.length; token++) {
    const value = logits[token] as number;
    if (Number.isFinite(value)) finite++;
    else if (value !== -Infinity) {
      throw new ConfigError(`${op}: 'logits[${token}]' must be finite or -Infinity (masked), got ${value}`);
    }
  }
  if (finite === 0) throw new ConfigError(`${op}: every one of the ${logits.length} logits is -Infinity; no token can be chosen`);
  return logits.length;
}

/** The index of the largest logit; the lowest index on ties. */
function argmax(logits: Float32Array): number {
  let best = 0;
  for (let token = 1; token < logits.length; token++) {
    if ((logits[token] as number) > (logits[best] as number)) best = token;
  }
  return best;
}
