/**
 * A LLaMA-style decoder language model whose feed-forward is dense, MoE or MoE++ per block, threading
 * the router logits from one MoE++ layer to the next (the official `gate_residual`).
 *
 *     h      = embed(tokens)                                   [B, T, D]
 *     for each block l:
 *       h    = h + attention(rmsNorm(h))                       causal, rotary
 *       f, G = ffn_l(rmsNorm(h), G_prev)                       dense MLP or MoE layer; G = router logits
 *       h    = h + f
 *     logits = lmHead(rmsNorm(h))                              [B, T, V]
 */
import * as tf from '@tensorflow/tfjs';
import { checkShape, randomNormal, SeededRandom, ConfigError } from '@moepp/tensors-core';
import { CausalSelfAttention } from './layers/attention.js';
import { RmsNorm } from './layers/rms-norm.js';
import { DenseFfn } from './layers/dense-ffn.js';
import { MoeLayer, type MoeForwardOptions, type MoeLayerOutput } from './moe-layer.js';
import { isMoeBlock, resolveModelConfig, type ModelConfig, type ModelConfigInput } from './config.js';
import { namedParameters, type NamedParameter } from './parameters.js';

/** One decoder block: pre-norm attention and pre-norm feed-forward, each with a residual. */
export interface DecoderBlock {
  /** RMSNorm before attention (`input_layernorm`). */
  readonly inputNorm: RmsNorm;
  /** Self-attention (`self_attn`). */
  readonly attention: CausalSelfAttention;
  /** RMSNorm before the feed-forward (`post_attention_layernorm`). */
  readonly postAttentionNorm: RmsNorm;
  /** The feed-forward (`mlp`): a dense MLP or an MoE layer. */
  readonly ffn: DenseFfn | MoeLayer;
}

/** Options of {@link DecoderLM.forward}. */
export interface ForwardOptions {
  /** Training mode (router noise, capacity dropping as configured). Default false. */
  readonly training?: boolean;
  /** Draws router noise where a router uses it. */
  readonly rng?: SeededRandom;
  /** `[B, T]` float32: 1 for real tokens, 0 for padding (left out of aux losses and statistics). */
  readonly tokenMask?: tf.Tensor2D;
  /** Benchmark switch: route uniformly instead of by the router (see {@link MoeLayer}). */
  readonly uniformRouting?: boolean | { readonly ffnShare: number };
  /**
   * Compute the routers' aux losses. Default `true` (training needs them). Pass `false` to generate or
   * evaluate: every MoE block then reports `auxLosses: {}`; logits, routing and statistics do not change
   * (see {@link MoeForwardOptions.auxiliary}).
   */
  readonly auxiliary?: boolean;
}

/** One MoE block's report from a forward pass: the layer's outputs besides its hidden state. */
export type MoeBlockReport = Omit<MoeLayerOutput, 'output'> & {
  /** The block index, 0-based. */
  readonly block: number;
};

/** What {@link DecoderLM.forward} returns. */
export interface LMOutput {
  /** `[B, T, V]` float32 next-token logits. */
  readonly logits: tf.Tensor3D;
  /** Per MoE block, in block order: its outputs besides the hidden state (losses, stats, timing). */
  readonly moeLayers: readonly MoeBlockReport[];
}

/**
 * The language model. Build one with {@link createModel} (from a config) or from a preset.
 */
export class DecoderLM {
  /** The validated config. */
  readonly config: ModelConfig;
  /** `[V, D]` token embedding (`model.embed_tokens.weight`, same layout as PyTorch). */
  readonly embedding: tf.Variable;
  /** The blocks. */
  readonly blocks: readonly DecoderBlock[];
  /** Final RMSNorm (`model.norm`). */
  readonly finalNorm: RmsNorm;
  /** `[D, V]` LM head (`lm_head.weight` transposed), or null when tied to the embedding. */
  readonly lmHead: tf.Variable | null;

  /**
   * @param config - the model config (defaults filled and validated here)
   * @param seed - seeds every initial weight; the same seed gives the same model
   * @throws `ConfigError` for an invalid config
   */
  constructor(config: ModelConfigInput | ModelConfig, seed = 0) {
    this.config = resolveModelConfig(config);
    const c = this.config;
    const rng = new SeededRandom(seed);
    // tidy frees the initial values (a variable made from a tensor shares its buffer, the tensor stays alive).
    this.embedding = tf.tidy(() => tf.variable(randomNormal([c.vocabSize, c.hiddenSize], rng, c.initializerRange), true));
    const blocks: DecoderBlock[] = [];
    for (let layer = 0; layer < c.numLayers; layer++) {
      const blockRng = rng.fork();
      blocks.push({
        inputNorm: new RmsNorm(c.hiddenSize, c.rmsNormEps),
        attention: new CausalSelfAttention(
          { hiddenSize: c.hiddenSize, numHeads: c.numHeads, ropeTheta: c.ropeTheta, initializerRange: c.initializerRange },
          blockRng,
        ),
        postAttentionNorm: new RmsNorm(c.hiddenSize, c.rmsNormEps),
        ffn:
          isMoeBlock(c, layer) && c.moe
            ? new MoeLayer({ hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize, initializerRange: c.initializerRange, ...c.moe }, blockRng)
            : new DenseFfn(c.hiddenSize, c.intermediateSize, blockRng, c.initializerRange),
      });
    }
    this.blocks = blocks;
    this.finalNorm = new RmsNorm(c.hiddenSize, c.rmsNormEps);
    this.lmHead = c.tieEmbeddings
      ? null
      : tf.tidy(() => tf.variable(randomNormal([c.hiddenSize, c.vocabSize], rng, c.initializerRange), true));
  }

  /**
   * Runs the model.
   *
   * @param tokens - `[B, T]` int32 token ids in `[0, V)`, `T <= maxSeqLen`
   * @param options - training mode, rng, padding mask, aux losses or not, benchmark routing
   * @returns logits `[B, T, V]` and, per MoE block, its aux losses, statistics and timing
   * @throws `ShapeError` for a wrong rank or dtype, `ConfigError` for T > maxSeqLen
   */
  forward(tokens: tf.Tensor2D, options: ForwardOptions = {}): LMOutput {
    checkShape('DecoderLM.forward', 'tokens', tokens, [null, null], 'int32');
    const [batch, seqLen] = tokens.shape;
    if (seqLen > this.config.maxSeqLen) {
      throw new ConfigError(
        `DecoderLM.forward: cannot forward a sequence of length ${seqLen}, maxSeqLen is only ${this.config.maxSeqLen}`,
      );
    }
    if (options.tokenMask) checkShape('DecoderLM.forward', 'tokenMask', options.tokenMask, [batch, seqLen], 'float32');
    const numTokens = batch * seqLen;
    const width = this.config.hiddenSize;
    const moeLayers: MoeBlockReport[] = [];
    const logits = tf.tidy(() => {
      const flatMask = options.tokenMask?.reshape([numTokens]) as tf.Tensor1D | undefined;
      let hidden = tf.gather(this.embedding, tokens.reshape([numTokens])).reshape([batch, seqLen, width]) as tf.Tensor3D; // [B, T, D]
      let previousLogits: tf.Tensor2D | null = null; // [N, E] the last MoE layer's router logits
      this.blocks.forEach((block, index) => {
        hidden = tf.add(hidden, block.attention.apply(block.inputNorm.apply(hidden) as tf.Tensor3D)) as tf.Tensor3D;
        const normed = block.postAttentionNorm.apply(hidden).reshape([numTokens, width]) as tf.Tensor2D; // [N, D]
        let update: tf.Tensor2D;
        if (block.ffn instanceof MoeLayer) {
          const out = block.ffn.forward(normed, {
            previousLogits,
            training: options.training ?? false,
            auxiliary: options.auxiliary ?? true,
            ...(options.rng ? { rng: options.rng } : {}),
            ...(flatMask ? { tokenMask: flatMask } : {}),
            ...(options.uniformRouting !== undefined ? { uniformRouting: options.uniformRouting } : {}),
          });
          const { output, ...report } = out;
          update = output;
          previousLogits = block.ffn.config.gatingResidual ? out.logits : null;
          moeLayers.push({ ...report, block: index });
        } else {
          update = block.ffn.apply(normed);
        }
        hidden = tf.add(hidden, update.reshape([batch, seqLen, width])) as tf.Tensor3D;
      });
      const final = this.finalNorm.apply(hidden).reshape([numTokens, width]); // [N, D]
      const head = this.lmHead ?? this.embedding.transpose(); // [D, V]
      const out = tf.matMul(final, head).reshape([batch, seqLen, this.config.vocabSize]) as tf.Tensor3D;
      // Layer outputs leave the tidy alongside the logits.
      return [out, ...moeLayers.flatMap((m) => moeLayerTensors(m))] as tf.Tensor[];
    })[0] as tf.Tensor3D;
    return { logits, moeLayers };
  }

  /**
   * Every trainable tensor under its official Hugging Face name.
   *
   * @returns the named parameters, embedding first, LM head last
   */
  parameters(): NamedParameter[] {
    const out: NamedParameter[] = namedParameters('model', [['embed_tokens.weight', this.embedding, false]]);
    this.blocks.forEach((block, layer) => {
      const prefix = `model.layers.${layer}`;
      const a = block.attention;
      out.push(
        ...namedParameters(`${prefix}.self_attn`, [
          ['q_proj.weight', a.qProj, true],
          ['k_proj.weight', a.kProj, true],
          ['v_proj.weight', a.vProj, true],
          ['o_proj.weight', a.oProj, true],
        ]),
      );
      out.push(...namedParameters(prefix, [['input_layernorm.weight', block.inputNorm.weight, false]]));
      out.push(...namedParameters(prefix, [['post_attention_layernorm.weight', block.postAttentionNorm.weight, false]]));
      if (block.ffn instanceof MoeLayer) {
        out.push(...block.ffn.parameters(`${prefix}.mlp.moe`));
      } else {
        out.push(
          ...namedParameters(`${prefix}.mlp`, [
            ['gate_proj.weight', block.ffn.gateProj, true],
            ['up_proj.weight', block.ffn.upProj, true],
            ['down_proj.weight', block.ffn.downProj, true],
          ]),
        );
      }
    });
    out.push(...namedParameters('model', [['norm.weight', this.finalNorm.weight, false]]));
    if (this.lmHead) out.push({ name: 'lm_head.weight', variable: this.lmHead, transposed: true });
    return out;
  }

  /** @returns all trainable variables (for an optimiser) */
  trainableVariables(): tf.Variable[] {
    return this.parameters().map((p) => p.variable);
  }

  /** Frees every weight and cached table. */
  dispose(): void {
    this.embedding.dispose();
    this.lmHead?.dispose();
    this.finalNorm.dispose();
    for (const block of this.blocks) {
      block.inputNorm.dispose();
      block.attention.dispose();
      block.postAttentionNorm.dispose();
      block.ffn.dispose();
    }
  }
}

function moeLayerTensors(out: MoeBlockReport): tf.Tensor[] {
  return [out.logits, out.probabilities, out.expertIndices, out.keepMask, out.combineWeights, ...Object.values(out.auxLosses), ...Object.values(out.stats)].filter(
    (t): t is tf.Tensor => t instanceof tf.Tensor,
  );
}

/**
 * Builds a model from a config.
 *
 * @param config - the config (see {@link ModelConfig}; defaults are filled in)
 * @param seed - seeds the initial weights
 * @returns a new model; dispose it when done
 * @throws `ConfigError` for an invalid config
 */
export function createModel(config: ModelConfigInput | ModelConfig, seed = 0): DecoderLM {
  return new DecoderLM(config, seed);
}
