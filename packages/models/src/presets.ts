/**
 * Presets for matched comparisons. Each size comes as three variants trained side by side:
 *
 * - `moe`: a vanilla MoE (FFN experts only, top-2, no gating residual);
 * - `moepp`: MoE++ with the same FFN experts plus 1 zero, 1 copy and 2 constant experts and gating
 *   residuals (the paper's (N+4)E layout), tau 0.75;
 * - `dense`: a dense model whose MLP has the same total FFN parameters as the MoE's experts
 *   (`F_dense = E_ffn · F`), so all three have (nearly) the same total parameter count.
 *
 * The shapes follow the paper's Table 2 (12 layers, D=768, F=2048, 12 heads for 0.6B–2B), scaled down
 * so that a preset trains on 2 CPU cores: widths and depths shrink, the MoE structure stays.
 */
import { ConfigError } from '@moepp/tensors-core';
import { resolveModelConfig, type ModelConfig, type MoeSettings } from './config.js';

/** Preset sizes, smallest first. */
export type PresetSize = 'smoke' | 'nano' | 'tiny' | 'small';

/** The three model variants of a preset. */
export type PresetVariant = 'dense' | 'moe' | 'moepp';

/** All preset sizes. */
export const PRESET_SIZES: readonly PresetSize[] = ['smoke', 'nano', 'tiny', 'small'];

/** All preset variants, in the order a comparison trains them. */
export const PRESET_VARIANTS: readonly PresetVariant[] = ['dense', 'moe', 'moepp'];

interface Shape {
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly ffnExperts: number;
  readonly maxSeqLen: number;
}

/** Shapes per size. `vocabSize` comes from the tokenizer the preset is used with. */
const SHAPES: Readonly<Record<PresetSize, Shape>> = {
  // A few seconds per model: end-to-end tests and the CLI's --preset smoke.
  smoke: { hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 2, ffnExperts: 4, maxSeqLen: 64 },
  nano: { hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 4, ffnExperts: 8, maxSeqLen: 128 },
  // The default comparison: (8+4) experts, as the paper's 0.6B/(8+4)E.
  tiny: { hiddenSize: 192, intermediateSize: 384, numLayers: 4, numHeads: 6, ffnExperts: 8, maxSeqLen: 128 },
  // (16+4) experts, as the paper's 1B/(16+4)E.
  small: { hiddenSize: 256, intermediateSize: 512, numLayers: 6, numHeads: 8, ffnExperts: 16, maxSeqLen: 256 },
};

/** Options of {@link presetConfig}. */
export interface PresetOptions {
  /** V, from the tokenizer. */
  readonly vocabSize: number;
  /** Overrides of the MoE settings (e.g. `tau`, `gatingResidual`, expert counts) for sweeps. */
  readonly moe?: Partial<Omit<MoeSettings, 'experts'>> & { readonly experts?: Partial<MoeSettings['experts']> };
}

/**
 * The config of one preset model.
 *
 * @param size - `smoke`, `nano`, `tiny` or `small`
 * @param variant - `dense`, `moe` or `moepp`
 * @param options - the vocabulary size and MoE overrides (ignored for `dense`)
 * @returns a validated config
 * @throws `ConfigError` for an unknown size or variant
 */
export function presetConfig(size: PresetSize, variant: PresetVariant, options: PresetOptions): ModelConfig {
  const shape = SHAPES[size];
  if (!shape) throw new ConfigError(`presetConfig: 'size' must be one of ${PRESET_SIZES.join(', ')}, got '${String(size)}'`);
  const base = {
    vocabSize: options.vocabSize,
    hiddenSize: shape.hiddenSize,
    numLayers: shape.numLayers,
    numHeads: shape.numHeads,
    maxSeqLen: shape.maxSeqLen,
  };
  switch (variant) {
    case 'dense':
      return resolveModelConfig({ ...base, intermediateSize: shape.intermediateSize * shape.ffnExperts, moe: null });
    case 'moe':
      return resolveModelConfig({
        ...base,
        intermediateSize: shape.intermediateSize,
        moe: {
          gatingResidual: false,
          tau: 1,
          ...options.moe,
          experts: { ffn: shape.ffnExperts, zero: 0, copy: 0, constant: 0, ...options.moe?.experts },
        },
      });
    case 'moepp':
      return resolveModelConfig({
        ...base,
        intermediateSize: shape.intermediateSize,
        moe: {
          gatingResidual: true,
          tau: 0.75,
          ...options.moe,
          experts: { ffn: shape.ffnExperts, zero: 1, copy: 1, constant: 2, ...options.moe?.experts },
        },
      });
    default:
      throw new ConfigError(`presetConfig: 'variant' must be one of ${PRESET_VARIANTS.join(', ')}, got '${String(variant)}'`);
  }
}
