/**
 * Autoregressive generation: feed the tokens so far, choose the next token from the last position's
 * logits with {@link sampleToken}, append it, repeat.
 *
 * There is no KV cache: every step recomputes the forward pass over the last `maxSeqLen` tokens. That
 * costs `O(T²)` attention per step instead of `O(T)`, which is fine for the small models and short
 * continuations this kit generates (samples in reports, end-to-end checks), and keeps the model code
 * free of a second, cached code path.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, ConfigError, describe, SeededRandom } from '@moepp/tensors-core';
import type { DecoderLM } from './decoder.js';
import { samplingProbabilities, sampleToken, type SamplingOptions } from './sampling.js';

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** How many tokens to add at most (an integer >= 0; 0 returns the prompt unchanged). */
  readonly maxNewTokens: number;
  /** Greedy or sampling with temperature / top-k / top-p, see {@link SamplingOptions}. */
  readonly sampling: SamplingOptions;
  /** Draws the samples; greedy draws nothing, sampling exactly one number per new token. */
  readonly rng: SeededRandom;
  /** Generation stops after emitting any of these ids (the stop token is included in the output). Default none. */
  readonly stopTokens?: readonly number[];
}

/** What {@link generate} returns. */
export interface GenerateResult {
  /** The prompt followed by the new tokens. */
  readonly tokens: number[];
  /** The new tokens only (ending with the stop token when one stopped generation). */
  readonly newTokens: number[];
}

/**
 * Continues a prompt, one token at a time, with the model in inference mode (`training: false`: no
 * router noise; `auxiliary: false`: no aux losses computed).
 *
 * No KV cache: each step runs the full forward pass over the last `maxSeqLen` tokens (a prompt longer
 * than `maxSeqLen` is windowed the same way; positions restart at 0 in each window), inside `tf.tidy`,
 * and reads back only the last position's logits. No tensor outlives a step.
 *
 * @param model - the language model
 * @param prompt - token ids in `[0, V)`, at least one
 * @param options - `maxNewTokens`, `sampling`, `rng` and optional `stopTokens`
 * @returns the prompt plus the new tokens, and the new tokens alone
 * @throws `ConfigError` for an empty prompt, a prompt or stop token id that is not an integer in
 *   `[0, V)`, a `maxNewTokens` that is not an integer >= 0, a missing rng, or invalid sampling options
 *   (checked before the first step, even when `maxNewTokens` is 0)
 */
export function generate(
  model: DecoderLM,
  prompt: readonly number[] | Int32Array,
  options: GenerateOptions,
): GenerateResult {
  const op = 'generate';
  const vocabSize = model.config.vocabSize;
  const maxSeqLen = model.config.maxSeqLen;
  if (!(Array.isArray(prompt) || prompt instanceof Int32Array)) {
    throw new ConfigError(`${op}: 'prompt' must be an array or Int32Array of token ids, got ${describe(prompt)}`);
  }
  if (prompt.length === 0) throw new ConfigError(`${op}: 'prompt' must hold at least one token, got an empty prompt`);
  const tokens = Array.from(prompt as ArrayLike<number>);
  tokens.forEach((token, position) => checkTokenId(op, `prompt[${position}]`, token, vocabSize));
  if (typeof options !== 'object' || options === null) throw new ConfigError(`${op}: 'options' must be an object, got ${describe(options)}`);
  const maxNewTokens = checkNumber(op, 'maxNewTokens', options.maxNewTokens, { integer: true, min: 0 });
  if (!(options.rng instanceof SeededRandom)) throw new ConfigError(`${op}: 'rng' must be a SeededRandom, got ${describe(options.rng)}`);
  const stopTokens = new Set<number>();
  (options.stopTokens ?? []).forEach((token, i) => stopTokens.add(checkTokenId(op, `stopTokens[${i}]`, token, vocabSize)));
  // Validates the sampling options against V now, rather than at the first step.
  samplingProbabilities(new Float32Array(vocabSize), options.sampling);

  const newTokens: number[] = [];
  for (let step = 0; step < maxNewTokens; step++) {
    const window = tokens.slice(-maxSeqLen); // the last T <= maxSeqLen tokens
    const seqLen = window.length;
    const lastLogits = tf.tidy(() => {
      const input = tf.tensor2d(window, [1, seqLen], 'int32'); // [1, T]
      const { logits } = model.forward(input, { auxiliary: false }); // [1, T, V]; nothing trains on aux losses here
      return logits.slice([0, seqLen - 1, 0], [1, 1, vocabSize]).reshape([vocabSize]); // [V]
    });
    let values: Float32Array;
    try {
      values = lastLogits.dataSync() as Float32Array;
    } finally {
      lastLogits.dispose();
    }
    const next = sampleToken(values, options.sampling, options.rng);
    tokens.push(next);
    newTokens.push(next);
    if (stopTokens.has(next)) break;
  }
  return { tokens, newTokens };
}

function checkTokenId(op: string, argument: string, token: unknown, vocabSize: number): number {
  if (typeof token !== 'number' || !Number.isInteger(token) || token < 0 || token >= vocabSize) {
    throw new ConfigError(`${op}: '${argument}' must be a token id, an integer in [0, ${vocabSize}), got ${describe(token)}`);
  }
  return token;
}
