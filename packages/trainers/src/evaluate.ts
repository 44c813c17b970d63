/**
 * Evaluation on the fixed validation windows: mean next-token cross-entropy, perplexity and next-token
 * accuracy. Deterministic (inference mode, no randomness, fixed batches in order) and leak-free.
 *
 *     loss       = Σ_batches Σ_tokens ce / #tokens         (token-weighted, so a short last batch counts fairly)
 *     perplexity = exp(loss)
 *     accuracy   = #(argmax logits == target) / #tokens
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@moepp/tensors-core';
import type { DecoderLM } from '@moepp/models';
import type { TokenBatch } from '@moepp/data';
import { tokenCrossEntropy } from './loss.js';

/** What {@link evaluate} returns. */
export interface EvaluationResult {
  /** Mean next-token cross-entropy, nats per token. */
  readonly loss: number;
  /** `exp(loss)`. */
  readonly perplexity: number;
  /** Share of tokens whose most likely prediction is the target, in [0, 1]. */
  readonly accuracy: number;
  /** Tokens scored (`Σ B·T` over the batches). */
  readonly tokens: number;
  /** Batches scored. */
  readonly batches: number;
  /**
   * Mean FFN experts per token over the MoE layers (the MoE++ paper's Fig. 5 quantity), token-weighted;
   * `null` for a dense model.
   */
  readonly ffnExpertsPerToken: number | null;
  /** Wall time, ms. */
  readonly elapsedMs: number;
}

/**
 * Checks that every id of a batch is a valid token for a model.
 *
 * @param batch - the batch
 * @param vocabSize - V
 * @param what - names the batch in the error
 * @throws `ConfigError` naming the batch, the position and the id when an id is outside `[0, V)`
 */
export function checkBatchTokens(batch: TokenBatch, vocabSize: number, what: string): void {
  const tokens = batch.tokens;
  for (let i = 0; i < tokens.length; i++) {
    const id = tokens[i] as number;
    if (id < 0 || id >= vocabSize) {
      throw new ConfigError(
        `${what}: token id ${id} at position ${i} is outside the model's vocabulary [0, ${vocabSize}); does the tokenizer match the model's vocabSize?`,
      );
    }
  }
}

/**
 * Evaluates a model on fixed batches.
 *
 * @param model - the model (run in inference mode)
 * @param batches - the validation batches (`inputs`, `targets`: int32 `[B, T]`), e.g. `prepareTextData(…).validation`
 * @returns loss, perplexity, accuracy, token count and FFN experts per token
 * @throws `ConfigError` for an empty batch list or a token id outside the vocabulary
 */
export async function evaluate(model: DecoderLM, batches: readonly TokenBatch[]): Promise<EvaluationResult> {
  if (batches.length === 0) throw new ConfigError('evaluate: \'batches\' must hold at least one batch, got none');
  const started = performance.now();
  const vocabSize = model.config.vocabSize;
  let lossSum = 0;
  let correct = 0;
  let tokens = 0;
  let ffnSum = 0;
  let moeLayerCount = 0;
  for (const [index, batch] of batches.entries()) {
    checkBatchTokens(batch, vocabSize, `evaluate: batch ${index}`);
    const { batchSize, seqLen } = batch;
    const numTokens = batchSize * seqLen;
    const summary = tf.tidy(() => {
      const inputs = tf.tensor2d(batch.inputs, [batchSize, seqLen], 'int32'); // [B, T]
      const targets = tf.tensor1d(batch.targets, 'int32'); // [N]
      const output = model.forward(inputs, { training: false, auxiliary: false }); // no aux losses: the loss here is cross-entropy only
      const logits = output.logits.reshape([numTokens, vocabSize]) as tf.Tensor2D; // [N, V]
      const losses = tokenCrossEntropy(logits, targets); // [N]
      const hits = tf.cast(tf.equal(tf.argMax(logits, 1), targets), 'float32'); // [N]
      const ffn = output.moeLayers.map((layer) => layer.stats.ffnExpertsPerToken);
      return tf.stack([tf.sum(losses), tf.sum(hits), ...ffn]); // [2 + L_moe]
    });
    const values = await summary.data();
    summary.dispose();
    lossSum += values[0] as number;
    correct += values[1] as number;
    moeLayerCount = values.length - 2;
    for (let l = 2; l < values.length; l++) ffnSum += (values[l] as number) * numTokens;
    tokens += numTokens;
  }
  const loss = lossSum / tokens;
  return {
    loss,
    perplexity: Math.exp(loss),
    accuracy: correct / tokens,
    tokens,
    batches: batches.length,
    ffnExpertsPerToken: moeLayerCount === 0 ? null : ffnSum / (tokens * moeLayerCount),
    elapsedMs: performance.now() - started,
  };
}
