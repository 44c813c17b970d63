import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { SeededRandom } from '../random.js';
import { expectNoLeak, expectValuesClose, valuesOn, type TensorValues } from '../testing.js';
import { activeKernelFixes, registerKernelFixes, withStockKernels } from './index.js';
import { broadcastWalk, WASM_COMPARE_FIXES } from './wasm-compare.js';

beforeAll(() => {
  registerKernelFixes('wasm');
});

const OPS = {
  Equal: tf.equal,
  NotEqual: tf.notEqual,
  Less: tf.less,
  LessEqual: tf.lessEqual,
  Greater: tf.greater,
  GreaterEqual: tf.greaterEqual,
} as const;

const SHAPES = [
  { name: 'one-hot mask [6, 2, 1] vs [5] int32', a: [6, 2, 1], b: [5], dtype: 'int32' as const },
  { name: 'row max [7, 9] vs [7, 1]', a: [7, 9], b: [7, 1], dtype: 'float32' as const },
  { name: 'column [1, 4] vs [3, 1]', a: [1, 4], b: [3, 1], dtype: 'float32' as const },
  { name: 'scalar [] vs [2, 3, 4]', a: [], b: [2, 3, 4], dtype: 'float32' as const },
  { name: 'middle broadcast [2, 1, 3, 4] vs [5, 1, 4]', a: [2, 1, 3, 4], b: [5, 1, 4], dtype: 'int32' as const },
  { name: 'bool [3, 1] vs [1, 2]', a: [3, 1], b: [1, 2], dtype: 'bool' as const },
  { name: 'empty [0, 3] vs [1, 3]', a: [0, 3], b: [1, 3], dtype: 'float32' as const },
];

function valuesFor(shape: readonly number[], dtype: 'float32' | 'int32' | 'bool', seed: number): number[] {
  const rng = new SeededRandom(seed);
  const size = shape.reduce((p, d) => p * d, 1);
  // few distinct values, so that equality is common; NaN in float32 inputs
  return Array.from({ length: size }, (_, i) =>
    dtype === 'bool' ? Math.floor(rng.uniform(0, 2)) : dtype === 'float32' && i === 2 ? NaN : Math.floor(rng.uniform(0, 4)),
  );
}

describe('wasm comparison fixes', () => {
  it('are registered for every comparison', () => {
    expect(activeKernelFixes('wasm')).toEqual(expect.arrayContaining(Object.values(WASM_COMPARE_FIXES)));
  });

  it.each(SHAPES.flatMap((shape) => (Object.keys(OPS) as Array<keyof typeof OPS>).map((op) => ({ ...shape, op }))))(
    '$op, $name: matches cpu and the stock wasm kernel',
    async (c) => {
      const a = valuesFor(c.a, c.dtype, 1);
      const b = valuesFor(c.b, c.dtype, 2);
      const compute = (): tf.Tensor => OPS[c.op](tf.tensor(a, c.a, c.dtype), tf.tensor(b, c.b, c.dtype));
      await expectNoLeak(async () => {
        const [fixed] = (await valuesOn('wasm', compute)) as [TensorValues];
        const [cpu] = (await valuesOn('cpu', compute)) as [TensorValues];
        const [stock] = (await withStockKernels(() => valuesOn('wasm', compute))) as [TensorValues];
        expect(fixed.dtype).toBe('bool');
        expectValuesClose(fixed, cpu, { atol: 0, rtol: 0 });
        expectValuesClose(fixed, stock, { atol: 0, rtol: 0 });
      });
    },
  );

  it('broadcastWalk merges contiguous axes and drops size-1 axes', () => {
    expect(broadcastWalk([2, 3, 4], [2, 3, 4], [2, 3, 4])).toEqual({ dims: [24], stridesA: [1], stridesB: [1] });
    expect(broadcastWalk([6, 2, 1], [5], [6, 2, 5])).toEqual({ dims: [12, 5], stridesA: [1, 0], stridesB: [0, 1] });
    expect(broadcastWalk([7, 9], [7, 1], [7, 9])).toEqual({ dims: [7, 9], stridesA: [9, 1], stridesB: [1, 0] });
    expect(broadcastWalk([], [], [])).toEqual({ dims: [1], stridesA: [0], stridesB: [0] });
  });
});
