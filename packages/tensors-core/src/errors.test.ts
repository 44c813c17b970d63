import { describe, expect, it } from 'vitest';
import { checkNumber, checkOneOf, checkShape, checkShapes, ConfigError, ShapeError } from './errors.js';

describe('checkShape', () => {
  it('accepts matching shapes and binds named dimensions', () => {
    const bindings = checkShapes('op', {
      x: [{ shape: [4, 8] }, ['N', 'D']],
      w: [{ shape: [8, 3] }, ['D', null]],
    });
    expect(bindings.get('N')).toBe(4);
    expect(bindings.get('D')).toBe(8);
  });

  it('names the op, the argument, the expected and the actual shape', () => {
    expect(() => checkShape('router', 'x', { shape: [4, 8, 2] }, ['N', 'D'])).toThrow(
      "router: argument 'x' must have shape [N, D], got [4, 8, 2] (rank 2 expected, got rank 3)",
    );
    expect(() => checkShape('router', 'x', { shape: [4, 7] }, [null, 8])).toThrow(
      "router: argument 'x' must have shape [?, 8], got [4, 7] (axis 1)",
    );
    expect(() =>
      checkShapes('moe', { x: [{ shape: [4, 8] }, ['N', 'D']], logits: [{ shape: [5, 3] }, ['N', 'E']] }),
    ).toThrow("moe: argument 'logits' must have shape [4, E], got [5, 3] (dimension N is 4 elsewhere, 5 on axis 0)");
    expect(() => checkShape('op', 'ids', { shape: [3], dtype: 'float32' }, [3], 'int32')).toThrow(ShapeError);
  });
});

describe('checkNumber / checkOneOf', () => {
  it('treats 0 as a value and rejects what breaks a bound', () => {
    expect(checkNumber('capacity', 'factor', 0, { min: 0 })).toBe(0);
    expect(() => checkNumber('capacity', 'factor', -0.5, { min: 0 })).toThrow(
      "capacity: 'factor' must be a finite number >= 0, got -0.5",
    );
    expect(() => checkNumber('router', 'topK', 2.5, { integer: true, min: 1 })).toThrow(ConfigError);
    expect(() => checkNumber('router', 'tau', Number.NaN)).toThrow(/got NaN/);
    expect(() => checkNumber('router', 'tau', undefined)).toThrow(/got undefined/);
    expect(() => checkNumber('router', 'tau', 0, { greaterThan: 0 })).toThrow(/> 0, got 0/);
  });

  it('lists the accepted values', () => {
    expect(checkOneOf('init', 'backend', 'cpu', ['cpu', 'wasm'])).toBe('cpu');
    expect(() => checkOneOf('init', 'backend', 'gpu', ['cpu', 'wasm'])).toThrow(
      "init: 'backend' must be one of 'cpu', 'wasm', got 'gpu'",
    );
  });
});
