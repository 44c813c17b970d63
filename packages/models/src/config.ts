/**
 * The model configuration: one typed, readonly record per model, validated once, with a comment on
 * every default. Field names are the kit's (camelCase); `hf-config.ts` maps them to the official
 * MoE++ `config.json` names.
 */
import { checkNumber, checkOneOf, ConfigError } from '@moepp/tensors-core';
import { ZERO_EXPERT_GATE_RULES, type ZeroExpertGateRule } from '@moepp/routers';

/** Expert counts of one MoE layer. The official MoE++ layout is FFN, then constant, copy, zero. */
export interface ExpertCounts {
  /** FFN experts (SwiGLU). */
  readonly ffn: number;
  /** Zero experts, `E(x) = 0`. */
  readonly zero: number;
  /** Copy experts, `E(x) = x`. */
  readonly copy: number;
  /** Constant experts, `E(x) = a1·x + a2·v`. */
  readonly constant: number;
}

/** Settings of the MoE / MoE++ feed-forward layers. */
export interface MoeSettings {
  /** Experts per MoE layer. Vanilla MoE: zero-computation counts all 0. */
  readonly experts: ExpertCounts;
  /** K, experts per token. Default 2 (every model of the paper). */
  readonly topK: number;
  /**
   * MoE layer interval (official `moe_expert_interval`): 1 = every block; otherwise block `l`
   * (0-based) is an MoE block when `(l + 1) % interval == 0` and a dense block otherwise. Default 1.
   */
  readonly interval: number;
  /** Thread each MoE layer's router logits into the next (`G(x^j) = W^j x^j + W_g^j G(x^{j-1})`). MoE++: true. */
  readonly gatingResidual: boolean;
  /** Official `moe_2layer_gate`: `Linear(D, 8E) -> tanh -> Linear(8E, E)` router. Default false. */
  readonly twoLayerGate: boolean;
  /** Official `moe_use_logits_norm`: divide logits by `std / gateNormStd` per token. Default true (released 7B). */
  readonly logitsNorm: boolean;
  /** Official `moe_gate_norm_std`. Default 1. */
  readonly gateNormStd: number;
  /** Official `moe_use_mixtral_gating`: top-k on logits, softmax over the k. Default false. */
  readonly mixtralGating: boolean;
  /**
   * Zero-expert gate rule: `'drop-and-renormalize'` (official code: the zero expert's gate is set to 0
   * and the K gates renormalised) or `'raw-softmax'` (the paper's Eq. 1). Default `'drop-and-renormalize'`.
   */
  readonly zeroGateRule: ZeroExpertGateRule;
  /** The inverse of official `moe_feature_no_mul_topk`: multiply the expert input by K. Default false. */
  readonly scaleInputByTopK: boolean;
  /** Capacity factor gamma; `null` = dropless (the inference code). 0 drops every token. Default null. */
  readonly capacityFactor: number | null;
  /** Use the heterogeneous per-type capacity of Eq. 8 when `capacityFactor` is set. Default true. */
  readonly heterogeneousCapacity: boolean;
  /** tau of the heterogeneous load-balance loss (Eq. 7); 1 = plain balance. Default 0.75. */
  readonly tau: number;
}

/** A decoder language model: LLaMA-style blocks with a dense or MoE / MoE++ feed-forward. */
export interface ModelConfig {
  /** V (`vocab_size`). */
  readonly vocabSize: number;
  /** D (`hidden_size`). */
  readonly hiddenSize: number;
  /** F, the width of one FFN expert, or of the dense MLP (`intermediate_size`). */
  readonly intermediateSize: number;
  /** Blocks (`num_hidden_layers`). */
  readonly numLayers: number;
  /** Attention heads (`num_attention_heads`); must divide D into an even head width. */
  readonly numHeads: number;
  /** Longest sequence the model is used with (`max_position_embeddings`). */
  readonly maxSeqLen: number;
  /** `rms_norm_eps`. Default 1e-6. */
  readonly rmsNormEps: number;
  /** `rope_theta`. Default 10000. */
  readonly ropeTheta: number;
  /** Std of the normal initialisation (`initializer_range`). Default 0.02. */
  readonly initializerRange: number;
  /** Share the embedding matrix with the LM head (`tie_word_embeddings`). Default false. */
  readonly tieEmbeddings: boolean;
  /** MoE settings; `null` for a dense model. */
  readonly moe: MoeSettings | null;
}

/** Defaults of {@link MoeSettings}: the released MoE++ 7B's switches, dropless, tau 0.75. */
export const DEFAULT_MOE_SETTINGS: MoeSettings = {
  experts: { ffn: 8, zero: 1, copy: 1, constant: 2 },
  topK: 2,
  interval: 1,
  gatingResidual: true,
  twoLayerGate: false,
  logitsNorm: true,
  gateNormStd: 1,
  mixtralGating: false,
  zeroGateRule: 'drop-and-renormalize',
  scaleInputByTopK: false,
  capacityFactor: null,
  heterogeneousCapacity: true,
  tau: 0.75,
};

/** What a caller may leave out of a {@link ModelConfig}. */
export type ModelConfigInput = Omit<
  ModelConfig,
  'rmsNormEps' | 'ropeTheta' | 'initializerRange' | 'tieEmbeddings' | 'moe'
> &
  Partial<Pick<ModelConfig, 'rmsNormEps' | 'ropeTheta' | 'initializerRange' | 'tieEmbeddings'>> & {
    readonly moe?: (Partial<Omit<MoeSettings, 'experts'>> & { readonly experts?: Partial<ExpertCounts> }) | null;
  };

/**
 * Fills defaults and validates a model config.
 *
 * @param input - the config; `moe: null` or absent means dense
 * @returns a complete, validated, frozen config
 * @throws `ConfigError` naming the field, the expected and the actual value
 */
export function resolveModelConfig(input: ModelConfigInput): ModelConfig {
  const op = 'ModelConfig';
  const int = (field: string, value: unknown, min = 1) => checkNumber(op, field, value, { integer: true, min });
  const hiddenSize = int('hiddenSize', input.hiddenSize, 2);
  const numHeads = int('numHeads', input.numHeads);
  if (hiddenSize % numHeads !== 0 || (hiddenSize / numHeads) % 2 !== 0) {
    throw new ConfigError(`${op}: 'numHeads' must divide hiddenSize ${hiddenSize} into an even head width, got ${numHeads}`);
  }
  let moe: MoeSettings | null = null;
  if (input.moe) {
    const m = { ...DEFAULT_MOE_SETTINGS, ...input.moe, experts: { ...DEFAULT_MOE_SETTINGS.experts, ...input.moe.experts } };
    const counts = m.experts;
    (['ffn', 'zero', 'copy', 'constant'] as const).forEach((k) => int(`moe.experts.${k}`, counts[k], 0));
    const total = counts.ffn + counts.zero + counts.copy + counts.constant;
    if (counts.ffn < 1) throw new ConfigError(`${op}: 'moe.experts.ffn' must be >= 1, got ${counts.ffn}`);
    checkNumber(op, 'moe.topK', m.topK, { integer: true, min: 1, max: total });
    int('moe.interval', m.interval);
    checkNumber(op, 'moe.gateNormStd', m.gateNormStd, { greaterThan: 0 });
    checkOneOf(op, 'moe.zeroGateRule', m.zeroGateRule, ZERO_EXPERT_GATE_RULES);
    if (m.capacityFactor !== null) checkNumber(op, 'moe.capacityFactor', m.capacityFactor, { min: 0 });
    checkNumber(op, 'moe.tau', m.tau, { min: 0 });
    for (const flag of ['gatingResidual', 'twoLayerGate', 'logitsNorm', 'mixtralGating', 'scaleInputByTopK', 'heterogeneousCapacity'] as const) {
      if (typeof m[flag] !== 'boolean') throw new ConfigError(`${op}: 'moe.${flag}' must be true or false, got ${String(m[flag])}`);
    }
    moe = Object.freeze({ ...m, experts: Object.freeze({ ...counts }) });
  }
  return Object.freeze({
    vocabSize: int('vocabSize', input.vocabSize, 2),
    hiddenSize,
    intermediateSize: int('intermediateSize', input.intermediateSize),
    numLayers: int('numLayers', input.numLayers),
    numHeads,
    maxSeqLen: int('maxSeqLen', input.maxSeqLen),
    rmsNormEps: checkNumber(op, 'rmsNormEps', input.rmsNormEps ?? 1e-6, { min: 0 }),
    ropeTheta: checkNumber(op, 'ropeTheta', input.ropeTheta ?? 10000, { greaterThan: 0 }),
    initializerRange: checkNumber(op, 'initializerRange', input.initializerRange ?? 0.02, { min: 0 }),
    tieEmbeddings: input.tieEmbeddings ?? false,
    moe,
  });
}

/**
 * @param config - a resolved config
 * @param layer - block index, 0-based
 * @returns whether that block's feed-forward is an MoE layer (official `moe_expert_interval` rule)
 */
export function isMoeBlock(config: ModelConfig, layer: number): boolean {
  if (!config.moe) return false;
  return config.moe.interval === 1 || (layer + 1) % config.moe.interval === 0;
}

/**
 * @param counts - expert counts
 * @returns E, the total number of experts
 */
export function totalExperts(counts: ExpertCounts): number {
  return counts.ffn + counts.zero + counts.copy + counts.constant;
}
