import { describe, expect, it } from 'vitest';
import { ConfigError } from '@moepp/tensors-core';
import { learningRateAt, type LearningRateSchedule } from './schedule.js';

// The paper's 5e-4 -> 5e-5, 10 warm-up steps, 100 decay steps after them (S − 1 − W = 100).
const paper: LearningRateSchedule = { peakLr: 5e-4, minLr: 5e-5, warmupSteps: 10, totalSteps: 111 };

describe('learningRateAt', () => {
  it('rises linearly during the warm-up, never starting at 0', () => {
    expect(learningRateAt(0, paper)).toBeCloseTo(5e-4 / 11, 15);
    expect(learningRateAt(4, paper)).toBeCloseTo((5e-4 * 5) / 11, 15);
    expect(learningRateAt(9, paper)).toBeCloseTo((5e-4 * 10) / 11, 15);
  });

  it('reaches the peak exactly at the end of the warm-up', () => {
    expect(learningRateAt(10, paper)).toBe(5e-4);
  });

  it('is halfway between peak and minimum in the middle of the cosine', () => {
    expect(learningRateAt(60, paper)).toBeCloseTo((5e-4 + 5e-5) / 2, 15);
    // A quarter of the way: min + (peak − min)·½(1 + cos(π/4)).
    expect(learningRateAt(35, paper)).toBeCloseTo(5e-5 + 4.5e-4 * 0.5 * (1 + Math.SQRT1_2), 15);
  });

  it('ends exactly at the minimum on the last step and stays there', () => {
    expect(learningRateAt(110, paper)).toBeCloseTo(5e-5, 15);
    expect(learningRateAt(111, paper)).toBe(5e-5);
    expect(learningRateAt(10_000, paper)).toBe(5e-5);
  });

  it('decreases monotonically after the warm-up', () => {
    for (let step = 11; step <= 110; step++) expect(learningRateAt(step, paper)).toBeLessThan(learningRateAt(step - 1, paper));
  });

  it('starts at the peak without warm-up; a single decay step keeps the peak', () => {
    expect(learningRateAt(0, { ...paper, warmupSteps: 0 })).toBe(5e-4);
    expect(learningRateAt(110, { ...paper, warmupSteps: 0 })).toBeCloseTo(5e-5, 15);
    expect(learningRateAt(0, { peakLr: 1, minLr: 0, warmupSteps: 0, totalSteps: 1 })).toBe(1);
  });

  it('rejects bad steps and schedules, naming the field', () => {
    expect(() => learningRateAt(-1, paper)).toThrow(/'step' must be an integer >= 0, got -1/);
    expect(() => learningRateAt(1.5, paper)).toThrow(ConfigError);
    expect(() => learningRateAt(0, { ...paper, minLr: 1e-3 })).toThrow(/'minLr' must be .*<= 0.0005/);
    expect(() => learningRateAt(0, { ...paper, warmupSteps: 111 })).toThrow(/'warmupSteps' must be < totalSteps 111, got 111/);
    expect(() => learningRateAt(0, { ...paper, totalSteps: 0 })).toThrow(/'totalSteps'/);
    expect(() => learningRateAt(0, { ...paper, peakLr: Number.NaN })).toThrow(/'peakLr'/);
  });
});
