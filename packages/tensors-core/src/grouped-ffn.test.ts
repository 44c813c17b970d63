import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accelerationStatus, suspendAcceleration, withAcceleration } from './accel.js';
import { ConfigError, ShapeError } from './errors.js';
import { fusedOpsActive } from './fused.js';
import { groupedSwigluFfn } from './grouped-ffn.js';
import { accelerationPaths, seededNormals, checkGradients, checkVariableGradients, expectNoLeak, expectValuesClose, valuesOn, withBackend, type TensorValues } from './testing.js';


const sum = (values: readonly number[]): number => values.reduce((total, n) => total + n, 0);

/** One case's inputs as plain values, so every backend and path builds the same tensors. */
interface GroupedCase {
  readonly groupSizes: readonly number[];
  readonly d: number;
  readonly f: number;
  /** [M, D] */
  readonly rows: Float32Array;
  /** G × [D, 2F] */
  readonly ups: readonly Float32Array[];
  /** G × [F, D] */
  readonly downs: readonly Float32Array[];
  /** [M, D], the upstream gradient of the tests' loss sum(y·upstream) */
  readonly upstream: Float32Array;
}

function makeCase(groupSizes: readonly number[], d: number, f: number, seed: number): GroupedCase {
  const m = sum(groupSizes);
  return {
    groupSizes,
    d,
    f,
    rows: seededNormals(m * d, seed),
    ups: groupSizes.map((_, g) => seededNormals(d * 2 * f, seed + 100 + g, 1 / Math.sqrt(d))),
    downs: groupSizes.map((_, g) => seededNormals(f * d, seed + 200 + g, 1 / Math.sqrt(f))),
    upstream: seededNormals(m * d, seed + 1),
  };
}

/** The case's tensors: `[rows [M, D], ...G × up [D, 2F], ...G × down [F, D]]`. */
function tensorsOf(c: GroupedCase): tf.Tensor[] {
  const m = sum(c.groupSizes);
  return [
    tf.tensor2d(c.rows, [m, c.d]),
    ...c.ups.map((values) => tf.tensor2d(values, [c.d, 2 * c.f])),
    ...c.downs.map((values) => tf.tensor2d(values, [c.f, c.d])),
  ];
}

/** Calls the op on `[rows, ...ups, ...downs]`. */
function applyOp(c: GroupedCase, inputs: readonly tf.Tensor[]): tf.Tensor2D {
  const groupCount = c.groupSizes.length;
  return groupedSwigluFfn(inputs[0] as tf.Tensor2D, c.groupSizes, inputs.slice(1, 1 + groupCount), inputs.slice(1 + groupCount));
}

/** The loss the gradient tests differentiate: sum(y·upstream). */
function loss(c: GroupedCase, inputs: readonly tf.Tensor[]): tf.Scalar {
  const m = sum(c.groupSizes);
  return tf.sum(tf.mul(applyOp(c, inputs), tf.tensor2d(c.upstream, [m, c.d])));
}

/** The gradients of {@link loss} with respect to rows and every weight. */
function gradientsOf(c: GroupedCase): tf.Tensor[] {
  return tf.grads((...inputs: tf.Tensor[]) => loss(c, inputs))(tensorsOf(c));
}

/** Plain per-group loops in float64: `y_g = swiglu(rows_g·up_g)·down_g`, no tfjs. */
function referenceForward(c: GroupedCase): TensorValues {
  const { d, f } = c;
  const m = sum(c.groupSizes);
  const y = new Float64Array(m * d);
  let row = 0;
  c.groupSizes.forEach((n, g) => {
    const up = c.ups[g] as Float32Array;
    const down = c.downs[g] as Float32Array;
    for (let r = row; r < row + n; r++) {
      const hidden = new Float64Array(f);
      for (let j = 0; j < f; j++) {
        let a = 0;
        let b = 0;
        for (let i = 0; i < d; i++) {
          const x = c.rows[r * d + i] as number;
          a += x * (up[i * 2 * f + j] as number);
          b += x * (up[i * 2 * f + f + j] as number);
        }
        hidden[j] = (a / (1 + Math.exp(-a))) * b; // silu(a)·b
      }
      for (let k = 0; k < d; k++) {
        let total = 0;
        for (let j = 0; j < f; j++) total += (hidden[j] as number) * (down[j * d + k] as number);
        y[r * d + k] = total;
      }
    }
    row += n;
  });
  return { shape: [m, d], dtype: 'float32', values: y };
}

/** Fused (when acceleration is active) and composite, on wasm; cpu is always the composite reference. */
const PATHS = accelerationPaths();

const CASES = [
  { label: 'an empty group and a group of 1, odd widths', groupSizes: [3, 0, 1, 5], d: 6, f: 5 },
  { label: 'G = 1 (a dense FFN)', groupSizes: [7], d: 9, f: 3 },
  { label: 'empty first and last groups', groupSizes: [0, 4, 0], d: 8, f: 4 },
  { label: 'uneven groups, widths not multiples of 8', groupSizes: [33, 17, 40, 1, 9], d: 20, f: 13 },
  { label: 'one row in all', groupSizes: [0, 1], d: 3, f: 2 },
] as const;

describe.each(PATHS)('groupedSwigluFfn on wasm: $path', ({ accelerated }) => {
  let resume: (() => void) | undefined;
  beforeAll(() => {
    if (!accelerated) resume = suspendAcceleration();
  });
  afterAll(() => resume?.());

  it('takes the path this block is about: one kernel forward and one backward when fused', async () => {
    const c = makeCase([2, 0, 3], 4, 3, 1);
    const inputs = tensorsOf(c);
    try {
      await withBackend('wasm', async () => {
        expect(fusedOpsActive()).toBe(accelerated);
        // tf.profile reuses its record object (copy each profile's names before the next one) and lists
        // customGrad's scopes ('', 'forward') next to kernels: keep the registered kernels
        const kernelsOnly = (names: readonly string[]): string[] => names.filter((name) => tf.getKernel(name, 'wasm') !== undefined);
        const forward = await tf.profile(() => applyOp(c, inputs));
        const forwardKernels = kernelsOnly(forward.kernelNames);
        tf.dispose(forward.result as tf.Tensor);
        const backward = await tf.profile(() => tf.grads((...xs: tf.Tensor[]) => loss(c, xs))(inputs));
        const backwardKernels = kernelsOnly(backward.kernelNames);
        tf.dispose(backward.result as tf.Tensor[]);
        if (accelerated) {
          expect(forwardKernels).toEqual(['MoeppGroupedSwiGLUFfn']);
          expect(backwardKernels.filter((name) => name.startsWith('MoeppGrouped'))).toEqual(['MoeppGroupedSwiGLUFfn', 'MoeppGroupedSwiGLUFfnGrad']);
          expect(backwardKernels).not.toContain('BatchMatMul');
        } else {
          expect(forwardKernels).toContain('BatchMatMul');
          expect(backwardKernels.some((name) => name.startsWith('MoeppGrouped'))).toBe(false);
        }
      });
    } finally {
      tf.dispose(inputs);
    }
  });

  it.each(CASES)('$label ($groupSizes, D=$d, F=$f): values match a per-group reference and cpu; gradients match cpu', async ({ groupSizes, d, f }) => {
    const c = makeCase(groupSizes, d, f, 3 + d);
    const groupCount = groupSizes.length;
    await expectNoLeak(async () => {
      const [wasm] = (await valuesOn('wasm', () => applyOp(c, tensorsOf(c)))) as [TensorValues];
      const [cpu] = (await valuesOn('cpu', () => applyOp(c, tensorsOf(c)))) as [TensorValues];
      expect(wasm.shape).toEqual([sum(groupSizes), d]);
      expect(wasm.dtype).toBe('float32');
      expectValuesClose(wasm, referenceForward(c), { atol: 1e-5, rtol: 1e-4 });
      expectValuesClose(cpu, referenceForward(c), { atol: 1e-5, rtol: 1e-4 });

      const wasmGrads = await valuesOn('wasm', () => gradientsOf(c));
      const cpuGrads = await valuesOn('cpu', () => gradientsOf(c));
      expect(wasmGrads.map((g) => g.shape)).toEqual([[sum(groupSizes), d], ...groupSizes.map(() => [d, 2 * f]), ...groupSizes.map(() => [f, d])]);
      wasmGrads.forEach((g, i) => expectValuesClose(g, cpuGrads[i] as TensorValues, { atol: 1e-4, rtol: 1e-4 }));
      groupSizes.forEach((n, g) => {
        if (n > 0) return;
        // an empty group's weights get exact zeros
        expect(Array.from((wasmGrads[1 + g] as TensorValues).values).every((v) => v === 0)).toBe(true);
        expect(Array.from((wasmGrads[1 + groupCount + g] as TensorValues).values).every((v) => v === 0)).toBe(true);
      });
    });
  });

  it('a weight shared by two groups gets the sum of both groups gradients', async () => {
    const c = makeCase([3, 2, 4], 5, 4, 30);
    // groups 0 and 2 share their weights: the op gets [rows, up0, up1, up0, down0, down1, down0]
    const gradients = (): tf.Tensor[] => {
      const [rows, up0, up1, , down0, down1] = tensorsOf(c) as tf.Tensor[];
      return tf.grads((r: tf.Tensor, u0: tf.Tensor, u1: tf.Tensor, d0: tf.Tensor, d1: tf.Tensor) => loss(c, [r, u0, u1, u0, d0, d1, d0]))([
        rows as tf.Tensor,
        up0 as tf.Tensor,
        up1 as tf.Tensor,
        down0 as tf.Tensor,
        down1 as tf.Tensor,
      ]);
    };
    await expectNoLeak(async () => {
      const wasm = await valuesOn('wasm', gradients);
      const cpu = await valuesOn('cpu', gradients);
      expect(wasm).toHaveLength(5);
      wasm.forEach((g, i) => expectValuesClose(g, cpu[i] as TensorValues, { atol: 1e-4, rtol: 1e-4 }));
    });
  });

  it('gradients agree with finite differences', async () => {
    const c = makeCase([2, 0, 1, 3], 5, 3, 40);
    await withBackend('wasm', () =>
      tf.tidy(() => checkGradients((...inputs: tf.Tensor[]) => tf.sum(tf.square(applyOp(c, inputs))), tensorsOf(c), { maxElements: 12 })),
    );
  });

  it('tf.Variable weights (as FfnExpert keeps them) get their gradients through variableGrads, without leaks', async () => {
    const c = makeCase([3, 2], 4, 3, 50);
    await withBackend('wasm', async () => {
      const [rows, ...weights] = tensorsOf(c) as [tf.Tensor2D, ...tf.Tensor[]];
      const variables = weights.map((w) => tf.variable(w));
      tf.dispose(weights);
      try {
        await expectNoLeak(() => {
          const f = (): tf.Scalar => tf.sum(tf.square(groupedSwigluFfn(rows, c.groupSizes, variables.slice(0, 2), variables.slice(2))));
          const { value, grads } = tf.variableGrads(f, variables);
          expect(Object.keys(grads)).toHaveLength(4);
          tf.dispose([value, ...Object.values(grads)]);
          checkVariableGradients(f, variables, { maxElements: 8 });
        });
      } finally {
        tf.dispose([rows, ...variables]);
      }
    });
  });

  it('inference (no tape) keeps no intermediate tensors', async () => {
    const c = makeCase([4, 0, 2], 6, 5, 60);
    await withBackend('wasm', async () => {
      const inputs = tensorsOf(c);
      try {
        const before = tf.memory().numTensors;
        const y = applyOp(c, inputs);
        expect(tf.memory().numTensors).toBe(before + 1);
        y.dispose();
        expect(tf.memory().numTensors).toBe(before);
      } finally {
        tf.dispose(inputs);
      }
    });
  });
});

describe.runIf(accelerationStatus().active)('groupedSwigluFfn: forward with acceleration, backward without', () => {
  it('the backward pass falls back to composite gradients and still matches cpu', async () => {
    const c = makeCase([5, 0, 1, 4], 7, 6, 70);
    const resumeLater: Array<() => void> = [];
    let mixed: TensorValues[];
    try {
      mixed = await valuesOn('wasm', () =>
        // tf.grads runs forward and backward in one call; suspending inside the loss makes the forward
        // pass fused and the backward pass composite.
        tf.grads((...inputs: tf.Tensor[]) => {
          const value = loss(c, inputs);
          resumeLater.push(suspendAcceleration());
          return value;
        })(tensorsOf(c)),
      );
    } finally {
      resumeLater.forEach((resume) => resume());
    }
    const cpu = await valuesOn('cpu', () => gradientsOf(c));
    const composite = await withAcceleration(false, () => valuesOn('wasm', () => gradientsOf(c)));
    mixed.forEach((g, i) => {
      expectValuesClose(g, cpu[i] as TensorValues, { atol: 1e-4, rtol: 1e-4 });
      expectValuesClose(g, composite[i] as TensorValues, { atol: 1e-4, rtol: 1e-4 });
    });
  });
});

describe('groupedSwigluFfn on cpu', () => {
  it('runs the composite form and matches the per-group reference, forward and backward', async () => {
    const c = makeCase([2, 0, 3], 5, 4, 80);
    await withBackend('cpu', async () => {
      expect(fusedOpsActive()).toBe(false);
      await expectNoLeak(() =>
        tf.tidy(() => {
          expectValuesClose({ shape: [5, 5], dtype: 'float32', values: applyOp(c, tensorsOf(c)).dataSync() }, referenceForward(c));
          checkGradients((...inputs: tf.Tensor[]) => tf.sum(tf.square(applyOp(c, inputs))), tensorsOf(c), { maxElements: 8 });
        }),
      );
    });
  });
});

describe('groupedSwigluFfn: argument checks', () => {
  const rows = tf.zeros([5, 4]) as tf.Tensor2D;
  const up = tf.zeros([4, 6]);
  const down = tf.zeros([3, 4]);
  afterAll(() => tf.dispose([rows, up, down]));

  it('rejects group sizes that do not sum to M, are negative or fractional, or are empty', () => {
    expect(() => groupedSwigluFfn(rows, [2, 2], [up, up], [down, down])).toThrow(
      new ConfigError("groupedSwigluFfn: 'groupSizes' must sum to M = 5 (the rows of 'rows' [5, 4]), got [2, 2] summing to 4"),
    );
    expect(() => groupedSwigluFfn(rows, [6, -1], [up, up], [down, down])).toThrow(
      new ConfigError("groupedSwigluFfn: 'groupSizes[1]' must be an integer >= 0, got -1"),
    );
    expect(() => groupedSwigluFfn(rows, [2.5, 2.5], [up, up], [down, down])).toThrow(ConfigError);
    expect(() => groupedSwigluFfn(rows, [], [], [])).toThrow(
      new ConfigError("groupedSwigluFfn: 'groupSizes' must be a non-empty array of row counts (one per group), got []"),
    );
  });

  it('rejects weight lists whose length is not the group count', () => {
    expect(() => groupedSwigluFfn(rows, [2, 3], [up], [down, down])).toThrow(
      new ConfigError("groupedSwigluFfn: 'upWeights' must hold 2 tensors (one per group of 'groupSizes'), got 1"),
    );
    expect(() => groupedSwigluFfn(rows, [2, 3], [up, up], [down, down, down])).toThrow(
      new ConfigError("groupedSwigluFfn: 'downWeights' must hold 2 tensors (one per group of 'groupSizes'), got 3"),
    );
  });

  it('rejects shapes that disagree and non-float32 tensors, naming the argument', () => {
    const wideUp = tf.zeros([4, 8]);
    const narrowDown = tf.zeros([3, 5]);
    const intRows = tf.zeros([5, 4], 'int32') as tf.Tensor2D;
    const vector = tf.zeros([5]) as unknown as tf.Tensor2D;
    try {
      expect(() => groupedSwigluFfn(rows, [2, 3], [up, wideUp], [down, down])).toThrow(
        new ShapeError("groupedSwigluFfn: argument 'upWeights[1]' must have shape [4, 6] and dtype float32, got [4, 8] float32 (axis 1)"),
      );
      expect(() => groupedSwigluFfn(rows, [2, 3], [up, up], [down, narrowDown])).toThrow(
        new ShapeError("groupedSwigluFfn: argument 'downWeights[1]' must have shape [3, 4] and dtype float32, got [3, 5] float32 (axis 1)"),
      );
      expect(() => groupedSwigluFfn(rows, [5], [up], [narrowDown])).toThrow(
        new ShapeError("groupedSwigluFfn: argument 'downWeights[0]' must have shape [F, 4] and dtype float32, got [3, 5] float32 (axis 1)"),
      );
      expect(() => groupedSwigluFfn(intRows, [5], [up], [down])).toThrow(/argument 'rows' must have shape \[M, D\] and dtype float32, got \[5, 4\] int32/);
      expect(() => groupedSwigluFfn(vector, [5], [up], [down])).toThrow(ShapeError);
    } finally {
      tf.dispose([wideUp, narrowDown, intRows, vector]);
    }
  });

  it('no rows at all give an empty output', async () => {
    await expectNoLeak(async () => {
      const [out] = (await valuesOn('wasm', () => groupedSwigluFfn(tf.zeros([0, 4]) as tf.Tensor2D, [0, 0], [up, up], [down, down]))) as [TensorValues];
      expect(out.shape).toEqual([0, 4]);
    });
  });
});
