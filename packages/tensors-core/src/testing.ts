/**
 * Helpers for tests of tfjs code, exported as `@moepp/tensors-core/testing`:
 * closeness with a readable diff, a no-leak check and a finite-difference gradient check.
 */
import * as tf from '@tensorflow/tfjs';

/** Tolerances for {@link expectTensorClose}: `|a - b| <= atol + rtol·|b|` elementwise. */
export interface Tolerance {
  /** Absolute tolerance. Default 1e-5. */
  readonly atol?: number;
  /** Relative tolerance. Default 1e-4. */
  readonly rtol?: number;
}

/**
 * Asserts that a tensor equals an expected tensor or nested array in shape and, within tolerance, values.
 *
 * @param actual - the tensor under test
 * @param expected - a tensor, a nested number array or a typed array of the same shape
 * @param tolerance - see {@link Tolerance}
 * @throws Error naming the shape mismatch or the first differing elements and the largest difference
 */
export function expectTensorClose(
  actual: tf.Tensor,
  expected: tf.Tensor | tf.TensorLike,
  tolerance: Tolerance = {},
): void {
  const atol = tolerance.atol ?? 1e-5;
  const rtol = tolerance.rtol ?? 1e-4;
  const expectedTensor = expected instanceof tf.Tensor ? expected : tf.tensor(expected as tf.TensorLike);
  try {
    compareValues(
      'expectTensorClose',
      actual.shape,
      actual.dataSync() as ArrayLike<number>,
      expectedTensor.shape,
      expectedTensor.dataSync() as ArrayLike<number>,
      atol,
      rtol,
    );
  } finally {
    if (!(expected instanceof tf.Tensor)) expectedTensor.dispose();
  }
}

function compareValues(
  op: string,
  aShape: readonly number[],
  a: ArrayLike<number>,
  eShape: readonly number[],
  e: ArrayLike<number>,
  atol: number,
  rtol: number,
): void {
  if (aShape.length !== eShape.length || aShape.some((d, i) => d !== eShape[i])) {
    throw new Error(`${op}: shape [${aShape.join(', ')}] differs from expected [${eShape.join(', ')}]`);
  }
  if (a.length !== e.length) {
    throw new Error(`${op}: ${a.length} values for shape [${aShape.join(', ')}], expected ${e.length}`);
  }
  const bad: string[] = [];
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const av = Number(a[i]);
    const ev = Number(e[i]);
    const diff = Math.abs(av - ev);
    const ok = diff <= atol + rtol * Math.abs(ev) || (Number.isNaN(av) && Number.isNaN(ev)) || av === ev;
    if (!ok) {
      worst = Math.max(worst, Number.isNaN(diff) ? Infinity : diff);
      if (bad.length < 5) bad.push(`[${unravel(i, aShape).join(', ')}]: ${av} vs ${ev}`);
    }
  }
  if (bad.length > 0) {
    throw new Error(`${op}: values differ (atol ${atol}, rtol ${rtol}, largest |diff| ${worst}); first: ${bad.join('; ')}`);
  }
}

/** A tensor's shape, dtype and values, read back from its backend (see {@link valuesOn}). */
export interface TensorValues {
  readonly shape: readonly number[];
  readonly dtype: tf.DataType;
  readonly values: ArrayLike<number>;
}

/**
 * Asserts that two read-back tensors ({@link valuesOn}) agree in shape and, within tolerance, values.
 * Dtypes are not compared (a float32 result may be checked against an int32 reference).
 *
 * @param actual - the values under test
 * @param expected - the reference values
 * @param tolerance - see {@link Tolerance}
 * @throws Error naming the shape mismatch or the first differing elements and the largest difference
 */
export function expectValuesClose(actual: TensorValues, expected: TensorValues, tolerance: Tolerance = {}): void {
  compareValues(
    'expectValuesClose',
    actual.shape,
    actual.values,
    expected.shape,
    expected.values,
    tolerance.atol ?? 1e-5,
    tolerance.rtol ?? 1e-4,
  );
}

function unravel(flat: number, shape: readonly number[]): number[] {
  const index: number[] = new Array(shape.length).fill(0);
  for (let axis = shape.length - 1; axis >= 0; axis--) {
    const size = shape[axis] as number;
    index[axis] = flat % size;
    flat = Math.floor(flat / size);
  }
  return index;
}

/**
 * Runs `fn` and asserts that the number of live tensors afterwards equals the number before, plus
 * `expectedNew` (for tensors that `fn` intentionally returns and the caller will dispose).
 *
 * @param fn - the code under test; may be async
 * @param expectedNew - tensors `fn` is allowed to leave alive
 * @returns whatever `fn` returns
 * @throws Error with the before and after counts when tensors leaked
 */
export async function expectNoLeak<T>(fn: () => T | Promise<T>, expectedNew = 0): Promise<T> {
  const before = tf.memory().numTensors;
  const result = await fn();
  const after = tf.memory().numTensors;
  if (after !== before + expectedNew) {
    throw new Error(
      `expectNoLeak: ${before} tensors before, ${after} after; expected ${before + expectedNew} (${after - before - expectedNew} leaked)`,
    );
  }
  return result;
}

/** Options for {@link checkGradients}. */
export interface GradientCheckOptions extends Tolerance {
  /** Step of the central difference. Default 1e-2 (float32 arithmetic needs a large step). */
  readonly epsilon?: number;
  /** Check at most this many elements per input (spread evenly). Default 24. */
  readonly maxElements?: number;
}

/**
 * Compares tfjs's analytic gradients of a scalar function with central finite differences
 * `(f(x + eps·e_i) - f(x - eps·e_i)) / (2·eps)`.
 *
 * Use smooth functions and float64-friendly magnitudes: the check runs in float32, so tolerances of
 * about 1e-2 relative are realistic.
 *
 * @param f - a function of the inputs that returns a scalar tensor
 * @param inputs - the points at which to check (not modified)
 * @param options - step, tolerances and the number of elements checked
 * @throws Error naming the input, the element, the analytic and the numeric value
 */
export function checkGradients(
  f: (...inputs: tf.Tensor[]) => tf.Scalar,
  inputs: tf.Tensor[],
  options: GradientCheckOptions = {},
): void {
  const epsilon = options.epsilon ?? 1e-2;
  const atol = options.atol ?? 1e-3;
  const rtol = options.rtol ?? 2e-2;
  const maxElements = options.maxElements ?? 24;
  const analytic = tf.tidy(() => tf.grads(f)(inputs).map((g) => g.dataSync().slice()));
  const values = inputs.map((x) => Float32Array.from(x.dataSync()));
  const evaluate = (which: number, flat: number, delta: number): number =>
    tf.tidy(() => {
      const shifted = values.map((v, i) => {
        if (i !== which) return inputs[i] as tf.Tensor;
        const copy = Float32Array.from(v);
        copy[flat] = (copy[flat] as number) + delta;
        return tf.tensor(copy, (inputs[i] as tf.Tensor).shape, 'float32');
      });
      return f(...shifted).dataSync()[0] as number;
    });
  inputs.forEach((input, which) => {
    const size = input.size;
    const stride = Math.max(1, Math.floor(size / maxElements));
    for (let flat = 0; flat < size; flat += stride) {
      const numeric = (evaluate(which, flat, epsilon) - evaluate(which, flat, -epsilon)) / (2 * epsilon);
      const exact = (analytic[which] as ArrayLike<number>)[flat] as number;
      if (!(Math.abs(exact - numeric) <= atol + rtol * Math.abs(numeric))) {
        throw new Error(
          `checkGradients: input ${which} element [${unravel(flat, input.shape).join(', ')}]: analytic ${exact}, finite difference ${numeric}`,
        );
      }
    }
  });
}

/**
 * Runs `fn` on a given backend and switches back to the previous backend afterwards, even if `fn`
 * throws. Tests that compare backends (say, wasm against the cpu reference) use it so that the
 * backend chosen by the test setup stays in force for the next test.
 *
 * @param backend - the tfjs backend to run on, e.g. `'cpu'` or `'wasm'`
 * @param fn - the code to run; may be async
 * @returns whatever `fn` returns
 * @throws Error naming the backend if tfjs cannot switch to it, or whatever `fn` throws
 */
export async function withBackend<T>(backend: string, fn: () => T | Promise<T>): Promise<T> {
  const previous = tf.getBackend();
  if (!(await tf.setBackend(backend))) throw new Error(`withBackend: backend '${backend}' failed to initialise`);
  try {
    return await fn();
  } finally {
    await tf.setBackend(previous);
  }
}

/**
 * Computes tensors on a given backend and reads them back as plain values, disposing every tensor
 * `compute` made (it runs inside `tf.tidy`). The usual way to compare a backend with the cpu
 * reference: `expectValuesClose((await valuesOn('wasm', f))[0], (await valuesOn('cpu', f))[0])`.
 *
 * @param backend - the tfjs backend to run on
 * @param compute - builds its inputs and returns the tensors to read (one or several)
 * @returns one {@link TensorValues} per returned tensor, in order
 * @throws whatever `compute` throws, after switching back to the previous backend
 */
export async function valuesOn(backend: string, compute: () => tf.Tensor | tf.Tensor[]): Promise<TensorValues[]> {
  return withBackend(backend, () => {
    const outputs = tf.tidy(compute);
    const list = Array.isArray(outputs) ? outputs : [outputs];
    try {
      return list.map((t) => ({ shape: [...t.shape], dtype: t.dtype, values: t.dataSync().slice() as ArrayLike<number> }));
    } finally {
      tf.dispose(list);
    }
  });
}

/**
 * The variable counterpart of {@link checkGradients}: components keep their weights in `tf.Variable`s
 * and read them inside their forward pass, so this perturbs the variables in place (`assign`).
 *
 * Compares `tf.variableGrads` of a scalar function with central finite differences
 * `(f(v + eps·e_i) - f(v - eps·e_i)) / (2·eps)` for sampled elements of each variable.
 *
 * @param f - a scalar function of the variables (called many times; must be deterministic)
 * @param variables - the variables to check; restored to their values afterwards
 * @param options - step (default 1e-2), tolerances (atol 1e-3, rtol 2e-2), elements per variable (24)
 * @throws Error naming the variable, the element, the analytic and the numeric value
 */
export function checkVariableGradients(
  f: () => tf.Scalar,
  variables: readonly tf.Variable[],
  options: GradientCheckOptions = {},
): void {
  const epsilon = options.epsilon ?? 1e-2;
  const atol = options.atol ?? 1e-3;
  const rtol = options.rtol ?? 2e-2;
  const maxElements = options.maxElements ?? 24;
  const analytic = tf.tidy(() => {
    const { grads } = tf.variableGrads(f, [...variables]);
    return variables.map((v) => {
      const g = grads[v.name];
      if (g === undefined) throw new Error(`checkVariableGradients: no gradient for variable ${v.name}`);
      return g.dataSync().slice();
    });
  });
  const evaluate = (): number => tf.tidy(() => f().dataSync()[0] as number);
  variables.forEach((variable, which) => {
    const original = Float32Array.from(variable.dataSync());
    const setElement = (flat: number, value: number): void => {
      const copy = Float32Array.from(original);
      copy[flat] = value;
      tf.tidy(() => variable.assign(tf.tensor(copy, variable.shape, 'float32')));
    };
    try {
      const stride = Math.max(1, Math.floor(variable.size / maxElements));
      for (let flat = 0; flat < variable.size; flat += stride) {
        const base = original[flat] as number;
        setElement(flat, base + epsilon);
        const plus = evaluate();
        setElement(flat, base - epsilon);
        const minus = evaluate();
        const numeric = (plus - minus) / (2 * epsilon);
        const exact = (analytic[which] as Float32Array)[flat] as number;
        if (!(Math.abs(exact - numeric) <= atol + rtol * Math.abs(numeric))) {
          throw new Error(
            `checkVariableGradients: variable ${which} (${variable.name}) element ${flat}: analytic ${exact}, finite difference ${numeric}`,
          );
        }
      }
    } finally {
      tf.tidy(() => variable.assign(tf.tensor(original, variable.shape, 'float32')));
    }
  });
}

/**
 * Sets a variable's value from a nested array.
 *
 * @param variable - the variable
 * @param values - values of the variable's shape
 */
export function setVariable(variable: tf.Variable, values: tf.TensorLike): void {
  tf.tidy(() => variable.assign(tf.tensor(values, variable.shape, 'float32')));
}
