/**
 * Exact parameter counts and forward FLOPs per token, from a config alone (no weights needed).
 * Tests check the parameter counts against the variables a built model actually holds.
 *
 * FLOP conventions: a multiply-add is 2 FLOPs; matmuls only (norms, softmax, rotary and other
 * elementwise work are left out, as in the usual 6·N·D estimates); attention scores and the
 * weighted sum count the full `T × T` product that the model computes, at context length T.
 */
import { isMoeBlock, totalExperts, type ModelConfig, type MoeSettings } from './config.js';

/** Parameter counts of a model. */
export interface ParameterCounts {
  /** Every trainable scalar. */
  readonly total: number;
  /** Used for one token: everything but the experts it is not routed to (expected value for MoE++). */
  readonly activated: number;
  /** In FFN experts (or the dense MLPs). */
  readonly ffn: number;
  /** In routers (gate, gate_map) and constant experts. */
  readonly routing: number;
  /** Embedding and LM head. */
  readonly embedding: number;
}

/** Forward FLOPs per token of a model. */
export interface FlopCounts {
  /** If every expert processed every token (upper bound; a dense model: the same as activated). */
  readonly total: number;
  /** With K experts per token, of which `ffnExpertsPerToken` are FFN experts. */
  readonly activated: number;
  /** The part of `activated` spent in experts (FFN and constant experts). */
  readonly experts: number;
}

/**
 * The share of routed slots that reach FFN experts once the heterogeneous load balance has settled
 * (moepp.md §3): `r = tau·N_ffn / (tau·N_ffn + N_zc)`. `1/r` is the ideal expert-compute speed-up.
 *
 * @param moe - the MoE settings (tau and counts)
 * @returns r in (0, 1]; 1 when there are no zero-computation experts
 */
export function ffnShare(moe: Pick<MoeSettings, 'tau' | 'experts'>): number {
  const zeroComputation = moe.experts.zero + moe.experts.copy + moe.experts.constant;
  const weighted = moe.tau * moe.experts.ffn;
  if (zeroComputation === 0) return 1;
  return weighted / (weighted + zeroComputation);
}

function routerParameters(moe: MoeSettings, dim: number): number {
  const experts = totalExperts(moe.experts);
  const gate = moe.twoLayerGate ? dim * 8 * experts + 8 * experts * experts : dim * experts;
  const gateMap = moe.gatingResidual ? experts * experts : 0;
  return gate + gateMap;
}

function routerFlops(moe: MoeSettings, dim: number): number {
  const experts = totalExperts(moe.experts);
  const gate = moe.twoLayerGate ? 2 * dim * 8 * experts + 2 * 8 * experts * experts : 2 * dim * experts;
  return gate + (moe.gatingResidual ? 2 * experts * experts : 0);
}

/**
 * Counts parameters.
 *
 * @param config - a resolved model config
 * @param ffnExpertsPerToken - FFN experts per token for `activated`; default K for a vanilla MoE and
 *   `K·r` for MoE++ (see {@link ffnShare}); pass a measured value to count what a trained router does
 * @returns the counts
 */
export function countModelParameters(config: ModelConfig, ffnExpertsPerToken?: number): ParameterCounts {
  const d = config.hiddenSize;
  const f = config.intermediateSize;
  const embedding = config.vocabSize * d * (config.tieEmbeddings ? 1 : 2);
  const attentionAndNorms = config.numLayers * (4 * d * d + 2 * d) + d;
  let ffn = 0;
  let routing = 0;
  let activatedFfn = 0;
  let activatedRouting = 0;
  for (let layer = 0; layer < config.numLayers; layer++) {
    const moe = config.moe;
    if (moe && isMoeBlock(config, layer)) {
      const perExpert = 3 * d * f;
      const constant = moe.experts.constant * 3 * d;
      ffn += moe.experts.ffn * perExpert;
      routing += routerParameters(moe, d) + constant;
      activatedFfn += (ffnExpertsPerToken ?? moe.topK * ffnShare(moe)) * perExpert;
      activatedRouting += routerParameters(moe, d) + constant;
    } else {
      ffn += 3 * d * f;
      activatedFfn += 3 * d * f;
    }
  }
  return {
    total: embedding + attentionAndNorms + ffn + routing,
    activated: embedding + attentionAndNorms + activatedFfn + activatedRouting,
    ffn,
    routing,
    embedding,
  };
}

/**
 * Counts forward FLOPs per token.
 *
 * @param config - a resolved model config
 * @param seqLen - T, the context length (attention cost grows with it); default `maxSeqLen`
 * @param ffnExpertsPerToken - as in {@link countModelParameters}
 * @returns total, activated and expert FLOPs per token
 */
export function countModelFlops(config: ModelConfig, seqLen = config.maxSeqLen, ffnExpertsPerToken?: number): FlopCounts {
  const d = config.hiddenSize;
  const f = config.intermediateSize;
  const attention = config.numLayers * (8 * d * d + 4 * seqLen * d);
  const head = 2 * d * config.vocabSize;
  let total = attention + head;
  let activated = attention + head;
  let experts = 0;
  for (let layer = 0; layer < config.numLayers; layer++) {
    const moe = config.moe;
    const ffnFlops = 6 * d * f;
    if (moe && isMoeBlock(config, layer)) {
      const router = routerFlops(moe, d);
      const constantFlops = 4 * d; // W_c x: [D] x [D, 2]
      const ffnPerToken = ffnExpertsPerToken ?? moe.topK * ffnShare(moe);
      const zeroComputation = moe.experts.zero + moe.experts.copy + moe.experts.constant;
      // Of the K - ffnPerToken other slots, the constant experts' expected share does a small matmul.
      const constantPerToken = zeroComputation > 0 ? (moe.topK - ffnPerToken) * (moe.experts.constant / zeroComputation) : 0;
      const expertFlops = ffnPerToken * ffnFlops + constantPerToken * constantFlops;
      total += router + moe.experts.ffn * ffnFlops + moe.experts.constant * constantFlops;
      activated += router + expertFlops;
      experts += expertFlops;
    } else {
      total += ffnFlops;
      activated += ffnFlops;
      experts += ffnFlops;
    }
  }
  return { total, activated, experts };
}
