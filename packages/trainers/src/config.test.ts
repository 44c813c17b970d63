import { describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { matchesPattern, resolveTrainConfig, resumeDifferences } from './config.js';

describe('resolveTrainConfig', () => {
  it("defaults to the paper's settings", () => {
    const config = resolveTrainConfig({ totalSteps: 1000 });
    expect(config.schedule).toEqual({ peakLr: 5e-4, minLr: 5e-5, warmupSteps: 50 });
    expect(config.optimizer).toEqual({ beta1: 0.9, beta2: 0.95, epsilon: 1e-8, weightDecay: 0.1 });
    expect(config.gradClip).toBe(1);
    expect(config.loss).toEqual({ balanceWeight: 0.01, zLossWeight: 0 });
    expect(config.accumulationSteps).toBe(1);
    expect(Object.isFrozen(config)).toBe(true);
    // The default warm-up always leaves a decay phase.
    expect(resolveTrainConfig({ totalSteps: 1 }).schedule.warmupSteps).toBe(0);
  });

  it('treats 0 and null as values, not as "unset"', () => {
    const config = resolveTrainConfig({ totalSteps: 10, gradClip: null, optimizer: { weightDecay: 0 }, schedule: { warmupSteps: 0, minLr: 0 } });
    expect(config.gradClip).toBeNull();
    expect(config.optimizer.weightDecay).toBe(0);
    expect(config.schedule).toEqual({ peakLr: 5e-4, minLr: 0, warmupSteps: 0 });
  });

  it('names the field in every error', () => {
    expect(() => resolveTrainConfig({ totalSteps: 0 })).toThrow(/TrainConfig: 'totalSteps' must be an integer >= 1, got 0/);
    expect(() => resolveTrainConfig({ totalSteps: 10, accumulationSteps: 1.5 })).toThrow(/'accumulationSteps'/);
    expect(() => resolveTrainConfig({ totalSteps: 10, gradClip: 0 })).toThrow(/'gradClip' must be a finite number > 0, got 0/);
    expect(() => resolveTrainConfig({ totalSteps: 10, schedule: { warmupSteps: 10 } })).toThrow(/TrainConfig.schedule: 'warmupSteps' must be < totalSteps 10/);
    expect(() => resolveTrainConfig({ totalSteps: 10, optimizer: { beta1: 1 } })).toThrow(/TrainConfig.optimizer: 'beta1'/);
    expect(() => resolveTrainConfig({ totalSteps: 10, frozen: [''] })).toThrow(/'frozen' must be an array of non-empty name patterns/);
    expect(() => resolveTrainConfig({ totalSteps: 10, leakCheck: 'yes' as never })).toThrow(ConfigError);
    expect(() => resolveTrainConfig({ totalSteps: 10, checkpointDir: '' })).toThrow(/'checkpointDir' must be a non-empty path or null/);
  });
});

describe('matchesPattern', () => {
  it('matches whole official names with * as a wildcard', () => {
    expect(matchesPattern('model.embed_tokens.weight', 'model.embed_tokens.weight')).toBe(true);
    expect(matchesPattern('model.layers.*.self_attn.*', 'model.layers.12.self_attn.q_proj.weight')).toBe(true);
    expect(matchesPattern('model.layers.*.self_attn.*', 'model.layers.1.mlp.up_proj.weight')).toBe(false);
    expect(matchesPattern('model.norm.weight', 'model.normXweight')).toBe(false); // dots are literal
    expect(matchesPattern('norm.weight', 'model.norm.weight')).toBe(false); // whole name
  });
});

describe('resumeDifferences', () => {
  it('lists the fields that define the computation, ignoring cadence and paths', () => {
    const saved = resolveTrainConfig({ totalSteps: 100, seed: 1, metricsPath: 'a.jsonl', evalInterval: 10 });
    expect(resumeDifferences(saved, resolveTrainConfig({ totalSteps: 100, seed: 1, metricsPath: 'b.jsonl', evalInterval: 5 }))).toEqual([]);
    expect(resumeDifferences(saved, resolveTrainConfig({ totalSteps: 200, seed: 1, schedule: { warmupSteps: 5, peakLr: 1e-3 } }))).toEqual([
      'totalSteps: 100 in the checkpoint, 200 now',
      'schedule: {"minLr":0.00005,"peakLr":0.0005,"warmupSteps":5} in the checkpoint, {"minLr":0.00005,"peakLr":0.001,"warmupSteps":5} now',
    ]);
  });
});
