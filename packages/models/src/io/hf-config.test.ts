import { describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { fromHfConfig, officialCompatibility, toHfConfig } from './hf-config.js';
import { presetConfig } from '../presets.js';
import { resolveModelConfig } from '../config.js';

describe('official config.json mapping', () => {
  it('round-trips every preset variant', () => {
    for (const variant of ['dense', 'moe', 'moepp'] as const) {
      const config = presetConfig('smoke', variant, { vocabSize: 300 });
      expect(fromHfConfig(JSON.parse(JSON.stringify(toHfConfig(config))))).toEqual(config);
    }
  });

  it('reads an official file without the kit field with the official layout and class defaults', () => {
    const config = fromHfConfig({
      vocab_size: 100, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 2,
      num_experts: [8], moe_use_logits_norm: true,
    });
    expect(config.moe!.experts).toEqual({ ffn: 4, zero: 1, copy: 1, constant: 2 });
    expect(config.moe!.twoLayerGate).toBe(true); // the MOE class default
    expect(config.moe!.topK).toBe(2);
    expect(officialCompatibility(config)).toEqual([]);
  });

  it('names the file and the field that is wrong', () => {
    expect(() => fromHfConfig({ hidden_size: 16 }, 'ckpt/config.json')).toThrow("ckpt/config.json: field 'num_attention_heads' must be a number, got undefined");
    expect(() => fromHfConfig([], 'x.json')).toThrow(ConfigError);
  });

  it('says why the official code would not run a model as trained', () => {
    const moe = presetConfig('smoke', 'moe', { vocabSize: 64 });
    expect(officialCompatibility(moe).join('\n')).toMatch(/gating residuals off/);
    const interval = resolveModelConfig({ vocabSize: 64, hiddenSize: 16, intermediateSize: 32, numLayers: 2, numHeads: 2, maxSeqLen: 8, moe: { interval: 2 } });
    expect(officialCompatibility(interval).join('\n')).toMatch(/MoE interval 2/);
  });
});
