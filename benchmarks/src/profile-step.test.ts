/**
 * Smoke test of the training-step profile on the smoke MoE++ preset. No timing assertions: it checks that
 * every kernel is attributed to a part of the model and that nothing leaks.
 */
import * as tf from '@tensorflow/tfjs';
import { accelerationStatus } from '@moepp/tensors-core';
import { describe, expect, it } from 'vitest';
import { profileTrainingStep, renderProfile } from './profile-step.js';

describe('profile-step on the smoke MoE++ preset', () => {
  it('attributes every kernel launch to a part of the model, AdamW included, without leaks', async () => {
    const tensorsBefore = tf.memory().numTensors;
    const profile = await profileTrainingStep({ size: 'smoke', variant: 'moepp', batchSize: 2, warmup: 1, steps: 2, profiledSteps: 2 });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expect(profile.stepMs).toHaveLength(2);
    expect(profile.profiledStepMs).toHaveLength(2);
    const parts = profile.groups.map((g) => g.group);
    for (const part of ['attention', 'router', 'experts', 'dispatch / combine', 'norms', 'loss', 'clipping', 'AdamW']) expect(parts).toContain(part);
    expect(parts).not.toContain('other');
    const launches = profile.groups.reduce((sum, g) => sum + g.count, 0);
    expect(launches).toBeCloseTo(profile.kernelCount, 0);
    const adamKernels = new Set(profile.kernels.filter((k) => k.group === 'AdamW').map((k) => k.kernel));
    if (accelerationStatus().active) {
      expect(adamKernels.has('MoeppAdamW')).toBe(true);
      expect(adamKernels.has('Sqrt')).toBe(false);
    } else {
      expect(adamKernels.has('Sqrt')).toBe(true);
    }
    const markdown = renderProfile(profile);
    expect(markdown).toContain('# Training step profile: smoke moepp, B=2, T=64');
    expect(markdown).toContain('| AdamW |');
  });
});
