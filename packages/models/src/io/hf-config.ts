/**
 * Maps a {@link ModelConfig} to and from the official MoE++ `config.json` (Hugging Face
 * `PretrainedConfig` of `model_type: "MoE++"`, file `configuration_moe_plus_plus.py`).
 *
 * The official code hard-codes what the kit makes configurable: top-2, the expert layout
 * `[FFN × (N-4)] + [constant × 2] + [copy] + [zero]`, gating residuals on and the code's zero-expert
 * gate rule. The kit writes those settings under an extra `moepp_kit` field; a config without it is
 * read with the official values. A model that differs from them (a vanilla MoE, other counts, top-1…)
 * exports fine, but the official PyTorch code would not run it as trained: {@link officialCompatibility}
 * says why.
 */
import { ConfigError, describe as describeValue } from '@moepp/tensors-core';
import type { ZeroExpertGateRule } from '@moepp/routers';
import { resolveModelConfig, totalExperts, type ModelConfig } from '../config.js';

/** The fields of an official MoE++ `config.json` that the kit reads and writes. */
export interface HfMoeppConfig {
  readonly architectures: readonly string[];
  readonly model_type: string;
  readonly vocab_size: number;
  readonly hidden_size: number;
  readonly intermediate_size: number;
  readonly num_hidden_layers: number;
  readonly num_attention_heads: number;
  readonly num_key_value_heads: number;
  readonly hidden_act: string;
  readonly max_position_embeddings: number;
  readonly initializer_range: number;
  readonly rms_norm_eps: number;
  readonly rope_theta: number;
  readonly tie_word_embeddings: boolean;
  readonly torch_dtype: string;
  readonly num_experts: readonly number[];
  readonly moe_expert_interval: number;
  readonly moe_use_mixtral_gating: boolean;
  readonly moe_2layer_gate: boolean;
  readonly moe_use_logits_norm: boolean;
  readonly moe_gate_norm_std: number;
  readonly moe_feature_no_mul_topk: boolean;
  /** The kit's own settings (absent in official files). */
  readonly moepp_kit?: Record<string, unknown>;
}

/**
 * @param config - a resolved model config
 * @returns the `config.json` object, official names plus a `moepp_kit` field
 */
export function toHfConfig(config: ModelConfig): HfMoeppConfig {
  const moe = config.moe;
  return {
    architectures: ['MoeForCausalLM'],
    model_type: 'MoE++',
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numHeads,
    hidden_act: 'silu',
    max_position_embeddings: config.maxSeqLen,
    initializer_range: config.initializerRange,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    tie_word_embeddings: config.tieEmbeddings,
    torch_dtype: 'float32',
    num_experts: [moe ? totalExperts(moe.experts) : 1],
    moe_expert_interval: moe ? moe.interval : config.numLayers + 1,
    moe_use_mixtral_gating: moe?.mixtralGating ?? false,
    moe_2layer_gate: moe?.twoLayerGate ?? false,
    moe_use_logits_norm: moe?.logitsNorm ?? false,
    moe_gate_norm_std: moe?.gateNormStd ?? 1,
    moe_feature_no_mul_topk: !(moe?.scaleInputByTopK ?? false),
    moepp_kit: {
      dense: moe === null,
      ...(moe
        ? {
            experts: { ...moe.experts },
            top_k: moe.topK,
            gating_residual: moe.gatingResidual,
            zero_gate_rule: moe.zeroGateRule,
            capacity_factor: moe.capacityFactor,
            heterogeneous_capacity: moe.heterogeneousCapacity,
            tau: moe.tau,
          }
        : {}),
    },
  };
}

function field<T>(json: Record<string, unknown>, name: string, type: 'number' | 'boolean', source: string, fallback?: T): T {
  const value = json[name];
  if (value === undefined && fallback !== undefined) return fallback;
  if (typeof value !== type) {
    throw new ConfigError(`${source}: field '${name}' must be a ${type}, got ${describeValue(value)}`);
  }
  return value as T;
}

/**
 * Reads an official (or kit-written) MoE++ `config.json`.
 *
 * @param json - the parsed JSON
 * @param source - the file name, for error messages
 * @returns a resolved model config
 * @throws `ConfigError` naming the file and the field that is missing or of the wrong type
 */
export function fromHfConfig(json: unknown, source = 'config.json'): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(`${source}: must hold a JSON object, got ${describeValue(json)}`);
  }
  const j = json as Record<string, unknown>;
  const num = (name: string, fallback?: number) => field<number>(j, name, 'number', source, fallback);
  const bool = (name: string, fallback?: boolean) => field<boolean>(j, name, 'boolean', source, fallback);
  const numHeads = num('num_attention_heads');
  const kvHeads = num('num_key_value_heads', numHeads);
  if (kvHeads !== numHeads) {
    throw new ConfigError(`${source}: field 'num_key_value_heads' must equal num_attention_heads (${numHeads}); grouped-query attention is not supported, got ${kvHeads}`);
  }
  if (j.hidden_act !== undefined && j.hidden_act !== 'silu') {
    throw new ConfigError(`${source}: field 'hidden_act' must be 'silu', got ${describeValue(j.hidden_act)}`);
  }
  if (j.rope_scaling !== undefined && j.rope_scaling !== null) {
    throw new ConfigError(`${source}: field 'rope_scaling' is not supported, got ${describeValue(j.rope_scaling)}`);
  }
  const kit = (typeof j.moepp_kit === 'object' && j.moepp_kit !== null ? j.moepp_kit : {}) as Record<string, unknown>;
  const numExperts = j.num_experts;
  if (!Array.isArray(numExperts) || typeof numExperts[0] !== 'number') {
    throw new ConfigError(`${source}: field 'num_experts' must be a list with one number, got ${describeValue(numExperts)}`);
  }
  const total = numExperts[0];
  const dense = kit.dense === true;
  let moe = null;
  if (!dense) {
    const kitExperts = kit.experts as Record<string, number> | undefined;
    // The official layout: [FFN × (N-4)] + [constant × 2] + [copy] + [zero].
    const experts = kitExperts
      ? { ffn: kitExperts.ffn ?? 0, zero: kitExperts.zero ?? 0, copy: kitExperts.copy ?? 0, constant: kitExperts.constant ?? 0 }
      : { ffn: total - 4, zero: 1, copy: 1, constant: 2 };
    if (totalExperts(experts) !== total) {
      throw new ConfigError(`${source}: field 'num_experts' is [${total}] but the expert counts ${JSON.stringify(experts)} add up to ${totalExperts(experts)}`);
    }
    moe = {
      experts,
      topK: typeof kit.top_k === 'number' ? kit.top_k : 2,
      interval: num('moe_expert_interval', 1),
      gatingResidual: typeof kit.gating_residual === 'boolean' ? kit.gating_residual : true,
      twoLayerGate: bool('moe_2layer_gate', true),
      logitsNorm: bool('moe_use_logits_norm', false),
      gateNormStd: num('moe_gate_norm_std', 1),
      mixtralGating: bool('moe_use_mixtral_gating', false),
      zeroGateRule: (kit.zero_gate_rule as ZeroExpertGateRule | undefined) ?? 'drop-and-renormalize',
      scaleInputByTopK: !bool('moe_feature_no_mul_topk', false),
      capacityFactor: (kit.capacity_factor as number | null | undefined) ?? null,
      heterogeneousCapacity: typeof kit.heterogeneous_capacity === 'boolean' ? kit.heterogeneous_capacity : true,
      tau: typeof kit.tau === 'number' ? kit.tau : 0.75,
    };
  }
  return resolveModelConfig({
    vocabSize: num('vocab_size'),
    hiddenSize: num('hidden_size'),
    intermediateSize: num('intermediate_size'),
    numLayers: num('num_hidden_layers'),
    numHeads,
    maxSeqLen: num('max_position_embeddings', 2048),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    ropeTheta: num('rope_theta', 10000),
    initializerRange: num('initializer_range', 0.02),
    tieEmbeddings: bool('tie_word_embeddings', false),
    moe,
  });
}

/**
 * Whether the official PyTorch code would run this model as the kit does.
 *
 * @param config - a resolved model config
 * @returns an empty list when compatible, else one reason per difference
 */
export function officialCompatibility(config: ModelConfig): string[] {
  const moe = config.moe;
  if (!moe) return ['a dense model: the official code builds MoE++ layers only'];
  const reasons: string[] = [];
  const e = moe.experts;
  if (e.zero !== 1 || e.copy !== 1 || e.constant !== 2) reasons.push(`expert counts ${JSON.stringify(e)}: the official layout has 2 constant, 1 copy and 1 zero expert`);
  if (moe.topK !== 2) reasons.push(`top-${moe.topK}: the official code is top-2`);
  if (!moe.gatingResidual) reasons.push('gating residuals off: the official code always applies gate_map');
  if (moe.zeroGateRule !== 'drop-and-renormalize') reasons.push("zero gate rule 'raw-softmax': the official code drops the zero expert's gate and renormalises");
  if (moe.capacityFactor !== null) reasons.push('a capacity factor: the official inference code is dropless');
  if (moe.interval !== 1) reasons.push(`MoE interval ${moe.interval}: the official dense MLP takes no gate_residual argument, so its code runs interval 1 only`);
  return reasons;
}
