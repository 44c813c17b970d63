/**
 * Sparse upcycling (Komatsuzaki et al. 2022, "Sparse Upcycling: Training Mixture-of-Experts from Dense
 * Checkpoints", arXiv 2212.05055): an MoE or MoE++ model initialised from a trained dense one.
 *
 *     embedding, attention, norms, LM head   copied from the dense model
 *     every FFN expert of MoE block l        a copy of dense block l's MLP, in the fused SwiGLU layout:
 *                                              upProj [D, 2F] = concat([gateProj, upProj], axis 1)
 *                                              downProj [F, D] = downProj
 *     routers, zero-computation experts      freshly initialised (from the seed)
 *     dense blocks between MoE blocks        copied (when `interval > 1`)
 *
 * Because all FFN experts of a layer start identical and the default gate rule renormalises the K gates
 * to sum to 1, a vanilla-MoE upcycle (no zero-computation experts) computes exactly the dense model's
 * function at step 0, whatever the router picks. With zero-computation experts it does not: a token's
 * gates can go to zero / copy / constant experts instead, which the dense model never did.
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@moepp/tensors-core';
import { DecoderLM } from './decoder.js';
import { DenseFfn } from './layers/dense-ffn.js';
import { MoeLayer } from './moe-layer.js';
import { resolveModelConfig, type ModelConfig, type ModelConfigInput } from './config.js';
import type { NamedParameter } from './parameters.js';

/** The MoE settings of {@link upcycle}: as in a model config, with the expert counts required. */
export type UpcycleSettings = Omit<NonNullable<ModelConfigInput['moe']>, 'experts'> & {
  /** Experts per MoE layer; absent zero-computation counts take the MoE++ defaults (1 zero, 1 copy, 2 constant). */
  readonly experts: NonNullable<NonNullable<ModelConfigInput['moe']>['experts']> & {
    /** FFN experts per MoE layer (>= 1), each a copy of the dense MLP. */
    readonly ffn: number;
  };
  /**
   * F, the width of one FFN expert. Optional; when given it must equal the dense MLP width (an expert is
   * a copy of the MLP, so the widths cannot differ). Default: the dense model's `intermediateSize`.
   */
  readonly intermediateSize?: number;
};

/**
 * Builds an MoE / MoE++ model from a trained dense model (sparse upcycling, arXiv 2212.05055).
 *
 * Every non-FFN weight (embedding, attention, norms, LM head) is copied; every FFN expert of every MoE
 * block is a copy of that block's dense MLP (`upProj [D, 2F] = [gateProj | upProj]`, `downProj [F, D]`);
 * routers and zero-computation experts are freshly initialised from `seed`. Blocks that stay dense
 * (`interval > 1`) keep their MLP. The result owns new variables: the dense model is not modified and
 * both must be disposed.
 *
 * @param dense - a dense model (`config.moe === null`)
 * @param moe - the MoE settings of the new model (counts, top-k, gate switches, tau, …)
 * @param seed - seeds the fresh router and zero-computation-expert weights
 * @returns a new model with the dense model's config plus `moe`
 * @throws `ConfigError` when `dense` already has MoE layers, when `moe.intermediateSize` differs
 *   from the dense MLP width, or for invalid MoE settings
 */
export function upcycle(dense: DecoderLM, moe: UpcycleSettings, seed = 0): DecoderLM {
  const op = 'upcycle';
  if (dense.config.moe !== null) {
    throw new ConfigError(
      `${op}: 'dense' must be a dense model (config.moe null), got an MoE model with ${dense.config.moe.experts.ffn} FFN experts per layer; use addExperts to grow an MoE model`,
    );
  }
  const { intermediateSize, ...settings } = moe;
  const mlpWidth = dense.config.intermediateSize;
  if (intermediateSize !== undefined && intermediateSize !== mlpWidth) {
    throw new ConfigError(
      `${op}: 'moe.intermediateSize' must equal the dense MLP width ${mlpWidth} (each FFN expert is a copy of the MLP), got ${intermediateSize}`,
    );
  }
  dense.blocks.forEach((block, layer) => {
    if (!(block.ffn instanceof DenseFfn) || block.ffn.ffnDim !== mlpWidth) {
      throw new ConfigError(`${op}: block ${layer} of 'dense' must hold a dense MLP of width ${mlpWidth}`);
    }
  });
  const config: ModelConfig = resolveModelConfig({ ...dense.config, moe: settings });
  const model = new DecoderLM(config, seed);
  try {
    // Everything outside the MoE layers has the same name and shape in both models.
    copyParameters(dense.parameters(), model.parameters(), (name) => !name.includes('.mlp.moe.'), op);
    model.blocks.forEach((block, layer) => {
      const mlp = dense.blocks[layer]?.ffn;
      if (!(block.ffn instanceof MoeLayer) || !(mlp instanceof DenseFfn)) return;
      for (const expert of block.ffn.experts) {
        if (expert.kind !== 'ffn') continue; // zero-computation experts stay fresh
        const { upProj, downProj } = expert.weights;
        if (!upProj || !downProj) throw new ConfigError(`${op}: FFN expert '${expert.name}' has no upProj / downProj`);
        tf.tidy(() => upProj.assign(tf.concat([mlp.gateProj, mlp.upProj], 1))); // [D, 2F] = [gate | up]
        downProj.assign(mlp.downProj); // [F, D]
      }
    });
  } catch (error) {
    model.dispose();
    throw error;
  }
  return model;
}

/**
 * Copies the values of the source parameters into the target parameters of the same official name, for
 * every target name that `include` accepts. Internal: shared by upcycling and growth.
 *
 * @param source - the parameters to read
 * @param target - the parameters to write
 * @param include - which target names to fill
 * @param op - the caller's name, for errors
 * @throws `ConfigError` when an included target name is missing from the source or has another shape
 */
export function copyParameters(
  source: readonly NamedParameter[],
  target: readonly NamedParameter[],
  include: (name: string) => boolean,
  op: string,
): void {
  const byName = new Map(source.map((p) => [p.name, p.variable] as const));
  for (const { name, variable } of target) {
    if (!include(name)) continue;
    const value = byName.get(name);
    if (!value) throw new ConfigError(`${op}: the source model has no parameter '${name}'`);
    if (value.shape.join() !== variable.shape.join()) {
      throw new ConfigError(`${op}: parameter '${name}' is [${value.shape.join(', ')}] in the source, [${variable.shape.join(', ')}] in the target`);
    }
    // assign shares the buffer until either side is reassigned; tfjs buffers are never written in place.
    variable.assign(value);
  }
}
