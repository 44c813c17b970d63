import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accelerationStatus, suspendAcceleration, withAcceleration } from './accel.js';
import { softmaxCrossEntropy } from './cross-entropy.js';
import { ConfigError, ShapeError } from './errors.js';
import { fusedOpsActive } from './fused.js';
import { SeededRandom } from './random.js';
import { accelerationPaths, seededNormals, checkGradients, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from './testing.js';

/** Logits `[N, V]`: normal with standard deviation `scale`. */
const randomLogits = (numTokens: number, vocabSize: number, seed: number, scale = 1): Float32Array => seededNormals(numTokens * vocabSize, seed, scale);

/** Targets `[N]` in `[0, V)`. */
function randomTargets(numTokens: number, vocabSize: number, seed: number): Int32Array {
  const rng = new SeededRandom(seed);
  return Int32Array.from({ length: numTokens }, () => rng.int(vocabSize));
}

/** Per-token loss and its gradient `dy_n·(softmax_n − onehot_n)`, in float64 from the float32 inputs. */
function reference(logits: Float32Array, targets: Int32Array, upstream: Float32Array, vocabSize: number): { loss: number[]; gradient: number[] } {
  const loss: number[] = [];
  const gradient: number[] = [];
  targets.forEach((target, n) => {
    const row = Array.from(logits.subarray(n * vocabSize, (n + 1) * vocabSize));
    const largest = Math.max(...row);
    const logSumExp = largest + Math.log(row.reduce((sum, x) => sum + Math.exp(x - largest), 0));
    loss.push(logSumExp - (row[target] as number));
    row.forEach((x, j) => gradient.push((upstream[n] as number) * (Math.exp(x - logSumExp) - (j === target ? 1 : 0))));
  });
  return { loss, gradient };
}

const asValues = (shape: number[], values: number[]): TensorValues => ({ shape, dtype: 'float32', values });

/** Fused (when acceleration is active) and composite, on wasm; cpu is always the composite reference. */
const PATHS = accelerationPaths();

describe.each(PATHS)('softmaxCrossEntropy on wasm: $path', ({ accelerated }) => {
  let resume: (() => void) | undefined;
  beforeAll(() => {
    if (!accelerated) resume = suspendAcceleration();
  });
  afterAll(() => resume?.());

  it('takes the path this block is about, forward and backward', async () => {
    const logits = tf.tensor2d([[0.5, -1, 2], [0, 0, 1]]);
    const targets = tf.tensor1d([2, 0], 'int32');
    try {
      await withBackend('wasm', async () => {
        expect(fusedOpsActive()).toBe(accelerated);
        const profile = await tf.profile(() => tf.grad((x: tf.Tensor) => tf.sum(softmaxCrossEntropy(x, targets)))(logits));
        const names = profile.kernelNames;
        expect(names.includes('MoeppSoftmaxCrossEntropy')).toBe(accelerated);
        expect(names.includes('MoeppSoftmaxCrossEntropyGrad')).toBe(accelerated);
        expect(names.includes('Exp')).toBe(!accelerated);
        expect(names.includes('GatherV2')).toBe(!accelerated);
        tf.dispose(profile.result as tf.Tensor);
      });
    } finally {
      tf.dispose([logits, targets]);
    }
  });

  it('gives hand-checkable values: a uniform row ln V, a target of probability 1/2 ln 2', async () => {
    const forward = (): tf.Tensor =>
      softmaxCrossEntropy(
        tf.tensor2d([
          [0, 0, 0],
          [0, Math.log(2), 0],
          [5, 5, 5],
        ]),
        tf.tensor1d([1, 1, 2], 'int32'),
      );
    await expectNoLeak(async () => {
      const [loss] = (await valuesOn('wasm', forward)) as [TensorValues];
      expect(loss.shape).toEqual([3]);
      expect(loss.dtype).toBe('float32');
      expect(Array.from(loss.values)).toEqual([expect.closeTo(Math.log(3), 6), expect.closeTo(Math.log(2), 6), expect.closeTo(Math.log(3), 6)]);
    });
  });

  it.each([
    { numTokens: 1, vocabSize: 1, scale: 1 }, // one class: loss 0, gradient 0
    { numTokens: 1, vocabSize: 7, scale: 1 },
    { numTokens: 6, vocabSize: 1, scale: 3 },
    { numTokens: 5, vocabSize: 8, scale: 2 },
    { numTokens: 9, vocabSize: 13, scale: 2 }, // V not a multiple of 8
    { numTokens: 7, vocabSize: 251, scale: 3 },
    { numTokens: 6, vocabSize: 40, scale: 80 }, // logits of ±80 and beyond: exp(80) overflows without the max
    { numTokens: 1024, vocabSize: 256, scale: 2 }, // the `tiny` preset's N·V
  ])('N=$numTokens V=$vocabSize (logits ·$scale): values and gradient match float64 and cpu, no leaks', async ({ numTokens, vocabSize, scale }) => {
    const logitValues = randomLogits(numTokens, vocabSize, numTokens + vocabSize, scale);
    const targetValues = randomTargets(numTokens, vocabSize, vocabSize);
    const upstream = randomLogits(1, numTokens, 3); // dy [N]
    const expected = reference(logitValues, targetValues, upstream, vocabSize);
    const forward = (): tf.Tensor => softmaxCrossEntropy(tf.tensor2d(logitValues, [numTokens, vocabSize]), tf.tensor1d(targetValues, 'int32'));
    const gradient = (): tf.Tensor =>
      tf.grad((x: tf.Tensor) => tf.sum(tf.mul(softmaxCrossEntropy(x, tf.tensor1d(targetValues, 'int32')), tf.tensor1d(upstream))))(
        tf.tensor2d(logitValues, [numTokens, vocabSize]),
      );
    await expectNoLeak(async () => {
      const [loss] = (await valuesOn('wasm', forward)) as [TensorValues];
      const [cpuLoss] = (await valuesOn('cpu', forward)) as [TensorValues];
      expect(loss.shape).toEqual([numTokens]);
      expect(loss.dtype).toBe('float32');
      // a few float32 ulps of the largest |logit| (up to ~300 here)
      expectValuesClose(loss, asValues([numTokens], expected.loss), { atol: 2e-6 * Math.max(1, 4 * scale), rtol: 2e-6 });
      expectValuesClose(loss, cpuLoss, { atol: 2e-6 * Math.max(1, 4 * scale), rtol: 2e-6 });
      const [dLogits] = (await valuesOn('wasm', gradient)) as [TensorValues];
      // The composite gradient on cpu, or for the large case on wasm: the gather's gradient runs the stock
      // cpu UnsortedSegmentSum here (the kit's fix is registered for wasm only), which takes ~40 s for N·V = 2^18.
      const [compositeDLogits] = (await (numTokens * vocabSize <= 1 << 14
        ? valuesOn('cpu', gradient)
        : withAcceleration(false, () => valuesOn('wasm', gradient)))) as [TensorValues];
      expect(dLogits.shape).toEqual([numTokens, vocabSize]);
      expectValuesClose(dLogits, asValues([numTokens, vocabSize], expected.gradient), { atol: 1e-6 * Math.max(1, 4 * scale), rtol: 1e-5 });
      expectValuesClose(dLogits, compositeDLogits, { atol: 1e-6 * Math.max(1, 4 * scale), rtol: 1e-5 });
    });
  });

  it('stays finite for rows of huge equal logits and of one dominant logit', async () => {
    const forward = (): tf.Tensor[] => {
      const logits = tf.tensor2d([
        [80, 80, 80, 80],
        [-80, -80, -80, -80],
        [1000, 0, -1000, 0],
      ]);
      const targets = tf.tensor1d([3, 0, 1], 'int32');
      return [softmaxCrossEntropy(logits, targets), tf.grad((x: tf.Tensor) => tf.sum(softmaxCrossEntropy(x, targets)))(logits)];
    };
    await expectNoLeak(async () => {
      const [loss, dLogits] = (await valuesOn('wasm', forward)) as [TensorValues, TensorValues];
      expect(Array.from(loss.values)).toEqual([expect.closeTo(Math.log(4), 5), expect.closeTo(Math.log(4), 5), expect.closeTo(1000, 3)]);
      expectValuesClose(dLogits, asValues([3, 4], [0.25, 0.25, 0.25, -0.75, -0.75, 0.25, 0.25, 0.25, 1, -1, 0, 0]), { atol: 1e-6 });
    });
  });

  it('the gradient agrees with finite differences', async () => {
    await withBackend('wasm', () =>
      tf.tidy(() => {
        const logits = tf.tensor2d(randomLogits(3, 5, 11), [3, 5]);
        const targets = tf.tensor1d([4, 0, 2], 'int32');
        const weights = tf.tensor1d([0.5, -1, 2]);
        checkGradients((x) => tf.sum(tf.mul(softmaxCrossEntropy(x, targets), weights)), [logits]);
      }),
    );
  });

  it('a tf.Variable gets its gradient through variableGrads, without leaks', async () => {
    await withBackend('wasm', async () => {
      const logits = tf.variable(tf.tensor2d([[0, Math.log(3)]]));
      const targets = tf.tensor1d([1], 'int32');
      try {
        await expectNoLeak(() => {
          const { value, grads } = tf.variableGrads(() => tf.sum(softmaxCrossEntropy(logits, targets)) as tf.Scalar, [logits]);
          // p = [1/4, 3/4]: loss ln(4/3), gradient p − onehot = [1/4, −1/4]
          expect(value.dataSync()[0]).toBeCloseTo(Math.log(4 / 3), 6);
          expect(Array.from((grads[logits.name] as tf.Tensor).dataSync())).toEqual([expect.closeTo(0.25, 6), expect.closeTo(-0.25, 6)]);
          tf.dispose([value, grads[logits.name] as tf.Tensor]);
        });
      } finally {
        tf.dispose([logits, targets]);
      }
    });
  });

  it('no tokens give an empty loss and an empty gradient', async () => {
    await expectNoLeak(async () => {
      const [loss, dLogits] = (await valuesOn('wasm', () => {
        const logits = tf.zeros([0, 5]);
        const targets = tf.zeros([0], 'int32');
        return [softmaxCrossEntropy(logits, targets), tf.grad((x: tf.Tensor) => tf.sum(softmaxCrossEntropy(x, targets)))(logits)];
      })) as [TensorValues, TensorValues];
      expect(loss.shape).toEqual([0]);
      expect(dLogits.shape).toEqual([0, 5]);
    });
  });
});

describe.runIf(accelerationStatus().active)('softmaxCrossEntropy: fused forward, composite backward', () => {
  it('the backward pass falls back to the composite gradient and still matches cpu', async () => {
    const logitValues = randomLogits(6, 11, 21, 2);
    const targetValues = randomTargets(6, 11, 22);
    const upstream = randomLogits(1, 6, 23);
    const compute = (suspendBackward: boolean, resumeLater: Array<() => void>): tf.Tensor[] =>
      tf.grads((x: tf.Tensor) => {
        const loss = tf.sum(tf.mul(softmaxCrossEntropy(x, tf.tensor1d(targetValues, 'int32')), tf.tensor1d(upstream)));
        if (suspendBackward) resumeLater.push(suspendAcceleration());
        return loss as tf.Scalar;
      })([tf.tensor2d(logitValues, [6, 11])]);
    const resumeLater: Array<() => void> = [];
    let mixed: TensorValues[];
    try {
      mixed = await valuesOn('wasm', () => compute(true, resumeLater));
    } finally {
      resumeLater.forEach((resume) => resume());
    }
    const cpu = await valuesOn('cpu', () => compute(false, []));
    expectValuesClose(mixed[0] as TensorValues, cpu[0] as TensorValues, { atol: 1e-6, rtol: 1e-5 });
  });

  it('fused and composite losses agree on wasm to float32 rounding', async () => {
    const logitValues = randomLogits(64, 100, 24, 4);
    const targetValues = randomTargets(64, 100, 25);
    const forward = (): tf.Tensor => softmaxCrossEntropy(tf.tensor2d(logitValues, [64, 100]), tf.tensor1d(targetValues, 'int32'));
    const [fused] = (await valuesOn('wasm', forward)) as [TensorValues];
    const [composite] = (await withAcceleration(false, () => valuesOn('wasm', forward))) as [TensorValues];
    expectValuesClose(fused, composite, { atol: 5e-6, rtol: 1e-6 });
  });

  it('a target outside [0, V) throws a RangeError naming the row and the value, and leaks nothing', async () => {
    await withBackend('wasm', async () => {
      const logits = tf.tensor2d(randomLogits(3, 4, 26), [3, 4]);
      const tooLarge = tf.tensor1d([0, 3, 4], 'int32');
      const negative = tf.tensor1d([-1, 0, 0], 'int32');
      try {
        await expectNoLeak(() => {
          expect(() => softmaxCrossEntropy(logits, tooLarge)).toThrow(RangeError);
          expect(() => softmaxCrossEntropy(logits, tooLarge)).toThrow("accel.softmaxCrossEntropy: 'targets' row 2 holds 4, outside [0, 4)");
          expect(() => softmaxCrossEntropy(logits, negative)).toThrow("accel.softmaxCrossEntropy: 'targets' row 0 holds -1, outside [0, 4)");
          expect(() => tf.grad((x: tf.Tensor) => tf.sum(softmaxCrossEntropy(x, tooLarge)))(logits)).toThrow(RangeError);
        });
      } finally {
        tf.dispose([logits, tooLarge, negative]);
      }
    });
  });
});

describe('softmaxCrossEntropy: argument checks', () => {
  it('rejects wrong ranks, dtypes and token counts, naming the argument', async () => {
    await expectNoLeak(() =>
      tf.tidy(() => {
        const logits = tf.zeros([4, 10]);
        const targets = tf.zeros([4], 'int32');
        expect(() => softmaxCrossEntropy(tf.zeros([10]), targets)).toThrow(new ShapeError("softmaxCrossEntropy: argument 'logits' must be [N, V] with V >= 1, got [10]"));
        expect(() => softmaxCrossEntropy(tf.zeros([2, 2, 10]), targets)).toThrow(ShapeError);
        expect(() => softmaxCrossEntropy(tf.zeros([4, 0]), targets)).toThrow(new ShapeError("softmaxCrossEntropy: argument 'logits' must be [N, V] with V >= 1, got [4, 0]"));
        expect(() => softmaxCrossEntropy(logits, tf.zeros([3], 'int32'))).toThrow(
          new ShapeError("softmaxCrossEntropy: argument 'targets' must have shape [4] for logits [4, 10], got [3]"),
        );
        expect(() => softmaxCrossEntropy(logits, tf.zeros([4, 1], 'int32'))).toThrow(ShapeError);
        expect(() => softmaxCrossEntropy(tf.zeros([4, 10], 'int32'), targets)).toThrow(new ConfigError("softmaxCrossEntropy: argument 'logits' must be float32, got int32"));
        expect(() => softmaxCrossEntropy(logits, tf.zeros([4]))).toThrow(new ConfigError("softmaxCrossEntropy: argument 'targets' must be int32, got float32"));
      }),
    );
  });
});
