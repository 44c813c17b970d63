/**
 * Helpers for tests of tfjs code, exported as `@moepp/tensors-core/testing`:
 * closeness with a readable diff, a no-leak check, a finite-difference gradient check, seeded test
 * values, the paths a fused op's suite runs, and the harness that keeps README examples compiled and
 * running.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { accelerationStatus } from './accel.js';
import { SeededRandom } from './random.js';

/**
 * Reproducible test values: `size` standard normal draws of a {@link SeededRandom} seeded with `seed`,
 * times `scale`.
 *
 * @param size - how many values
 * @param seed - the generator's seed
 * @param scale - a factor for every value; default 1
 * @returns `size` float32 values
 */
export function seededNormals(size: number, seed: number, scale = 1): Float32Array {
  const rng = new SeededRandom(seed);
  return Float32Array.from({ length: size }, () => rng.normal() * scale);
}

/** One path of {@link accelerationPaths}. */
export interface AccelerationPath {
  /** The path's name in test titles. */
  readonly path: string;
  /** Whether the suite runs with native acceleration (else it suspends it). */
  readonly accelerated: boolean;
}

/**
 * The paths a suite of an accelerated op runs on wasm, for `describe.each`: with native acceleration
 * (only when it is active in this process) and without.
 *
 * @param acceleratedName - the accelerated path's name; default `'fused native kernels'`
 * @param plainName - the other path's name; default `'composite ops'`
 * @returns one or two paths, the accelerated one first
 */
export function accelerationPaths(acceleratedName = 'fused native kernels', plainName = 'composite ops'): readonly AccelerationPath[] {
  return [...(accelerationStatus().active ? [{ path: acceleratedName, accelerated: true }] : []), { path: plainName, accelerated: false }];
}

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

/** The line that opens a test file's copy of its README example (see {@link expectReadmeExample}). */
const EXAMPLE_START = '// example:start\n';
/** The line that closes it. */
const EXAMPLE_END = '// example:end';

/**
 * The fenced `ts` code blocks of a Markdown text, in order, each with its trailing newline.
 *
 * @param markdown - the Markdown text, e.g. a README
 * @returns the contents of every such block (without the fences)
 */
export function readmeExampleBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1] as string);
}

/**
 * Asserts that a README shows, as a fenced `ts` code block, exactly the example that a test file compiles and
 * runs. The test file holds the example at its top level, between a `// example:start` line and a
 * `// example:end` line, so that TypeScript type-checks it, vitest runs it when it loads the file, and
 * the test's assertions can read its variables; this check keeps the README's copy identical.
 *
 * Typical use, in `src/readme.test.ts` (see {@link startReadmeExample} for examples that print or write
 * files):
 * ```ts
 * // example:start
 * import { matmulFlops } from '@moepp/tensors-core';
 * const flops = matmulFlops(3, 8, 16); // 768
 * // example:end
 * it('matches the README and runs', () => {
 *   expectReadmeExample(import.meta.url);
 *   expect(flops).toBe(768);
 * });
 * ```
 *
 * @param testFileUrl - the test file's URL, `import.meta.url`
 * @param readmeUrl - the README to compare with; default `../README.md` relative to the test file (the
 *   package README for a test in `src/`)
 * @throws Error if the test file lacks the markers, or naming the README and the first line of the
 *   example that its closest `ts` block does not match
 */
export function expectReadmeExample(testFileUrl: string | URL, readmeUrl: string | URL = new URL('../README.md', testFileUrl)): void {
  const testPath = new URL(testFileUrl);
  const readmePath = new URL(readmeUrl);
  const source = readFileSync(testPath, 'utf8');
  const start = source.indexOf(EXAMPLE_START);
  const end = source.indexOf(EXAMPLE_END, start);
  if (start < 0 || end < 0) {
    throw new Error(`expectReadmeExample: ${testPath.pathname} must hold the example between '// example:start' and '// example:end' lines`);
  }
  const example = source.slice(start + EXAMPLE_START.length, end);
  const readme = readFileSync(readmePath, 'utf8');
  if (readme.includes('```ts\n' + example + '```')) return;
  // Say where it differs: the first mismatching line against the block that agrees longest.
  const exampleLines = example.split('\n');
  const blocks = readmeExampleBlocks(readme).map((block) => block.split('\n'));
  let closest = -1;
  let agreeing = -1; // lines of the closest block that equal the example's first lines
  blocks.forEach((blockLines, index) => {
    let line = 0;
    while (line < exampleLines.length && exampleLines[line] === blockLines[line]) line++;
    if (line > agreeing) [closest, agreeing] = [index, line];
  });
  const where =
    closest < 0
      ? 'it has no ```ts block'
      : `its closest \`\`\`ts block (number ${closest + 1}) differs at example line ${agreeing + 1}: expected ` +
        `${JSON.stringify(exampleLines[agreeing] ?? '(end of block)')}, got ${JSON.stringify(blocks[closest]![agreeing] ?? '(end of block)')}`;
  throw new Error(`expectReadmeExample: ${readmePath.pathname} does not show the example of ${testPath.pathname}; ${where}`);
}

/** Options for {@link startReadmeExample}. */
export interface ReadmeExampleOptions {
  /**
   * Run the example in a fresh folder under the OS temp folder whose name starts with this prefix (for
   * examples that write files, e.g. `runs/`), changing the working folder until
   * {@link ReadmeExampleRun.cleanup}. Default: none, the example runs in the current working folder.
   */
  readonly temporaryFolderPrefix?: string;
}

/** The surroundings of a running README example, from {@link startReadmeExample}. */
export interface ReadmeExampleRun {
  /** The folder the example runs in: the temporary folder, or the working folder if there is none. */
  readonly workDir: string;
  /** The arguments of every `console.log` call from the start to {@link ReadmeExampleRun.endExample}. */
  readonly printed: unknown[][];
  /** Stops recording `console.log` and puts the original back; call it after `// example:end`. Idempotent. */
  endExample(): void;
  /**
   * Calls {@link ReadmeExampleRun.endExample}, returns to the previous working folder and removes the
   * temporary folder; pass it to `afterAll`. Idempotent.
   */
  cleanup(): void;
}

/**
 * Sets up the surroundings of a README example that prints or writes files: records `console.log` (the
 * output is kept in {@link ReadmeExampleRun.printed} for the test to check, not printed) and optionally
 * runs it in a fresh temporary folder. Call it at the top level of the test file just before the
 * `// example:start` line, and `endExample()` right after `// example:end`:
 * ```ts
 * const run = startReadmeExample({ temporaryFolderPrefix: 'moepp-data-readme-' });
 * afterAll(run.cleanup);
 * // example:start
 * ...
 * // example:end
 * run.endExample();
 * it('matches the README and runs', () => {
 *   expectReadmeExample(import.meta.url);
 *   expect(run.printed).toEqual([...]);
 * });
 * ```
 * The working folder belongs to the whole process, so a temporary folder needs vitest's `forks` pool (as
 * this repository uses; `process.chdir` throws in worker threads), which runs each test file in its own process.
 *
 * @param options - see {@link ReadmeExampleOptions}
 * @returns the run: its folder, what it printed, and how to end it
 * @throws Error if the temporary folder cannot be made or entered
 */
export function startReadmeExample(options: ReadmeExampleOptions = {}): ReadmeExampleRun {
  const originalDir = process.cwd();
  const temporaryDir =
    options.temporaryFolderPrefix === undefined ? undefined : mkdtempSync(join(tmpdir(), options.temporaryFolderPrefix));
  if (temporaryDir !== undefined) process.chdir(temporaryDir);
  const printed: unknown[][] = [];
  const originalLog = console.log;
  console.log = (...values: unknown[]): void => void printed.push(values);
  let logging = true;
  let cleaned = false;
  const endExample = (): void => {
    if (!logging) return;
    console.log = originalLog;
    logging = false;
  };
  return {
    workDir: temporaryDir ?? originalDir,
    printed,
    endExample,
    cleanup: (): void => {
      endExample();
      if (cleaned) return;
      cleaned = true;
      if (temporaryDir === undefined) return;
      process.chdir(originalDir);
      rmSync(temporaryDir, { recursive: true, force: true });
    },
  };
}
