import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  accelerationDisabledByEnvironment,
  accelerationStatus,
  activeAccel,
  configureAcceleration,
  DEFAULT_THREAD_TIMEOUT,
  loadAddon,
  OPENBLAS_CANDIDATES,
  withAcceleration,
  type NativeAccel,
} from './accel.js';
import { SeededRandom } from './random.js';

const addon = loadAddon();
/** OpenBLAS loads in this process (the addon tests use it directly, even with acceleration off). */
const blasLoaded = addon !== null && addon.load(OPENBLAS_CANDIDATES, 0, DEFAULT_THREAD_TIMEOUT).ok;

function randomArray(size: number, seed: number): Float32Array {
  const rng = new SeededRandom(seed);
  return Float32Array.from({ length: size }, () => rng.normal());
}

/** Plain row-major GEMM in double: C = alpha·op(A)·op(B) + beta·C. */
function referenceGemm(
  transposeA: boolean,
  transposeB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: Float32Array,
  lda: number,
  b: Float32Array,
  ldb: number,
  beta: number,
  c: Float32Array,
  ldc: number,
): void {
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) {
        const av = transposeA ? (a[p * lda + i] as number) : (a[i * lda + p] as number);
        const bv = transposeB ? (b[j * ldb + p] as number) : (b[p * ldb + j] as number);
        sum += av * bv;
      }
      c[i * ldc + j] = alpha * sum + beta * (c[i * ldc + j] as number);
    }
  }
}

function expectArraysClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance = 1e-5): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const diff = Math.abs((actual[i] as number) - (expected[i] as number));
    worst = Math.max(worst, diff / (1 + Math.abs(expected[i] as number)));
  }
  expect(worst).toBeLessThan(tolerance);
}

describe('acceleration status', () => {
  it('agrees with the environment: MOEPP_ACCEL=off means the fallback, with the reason', () => {
    const status = accelerationStatus();
    expect(status.active).toBe(activeAccel() !== null);
    if (accelerationDisabledByEnvironment()) {
      expect(status).toEqual({ active: false, reason: `disabled by MOEPP_ACCEL=${process.env.MOEPP_ACCEL}` });
    }
  });

  // CI sets MOEPP_EXPECT_ACCEL=1 when it installed OpenBLAS and the addon was built, so that a
  // silent fallback there is a failure rather than a slower green run.
  it.runIf(process.env.MOEPP_EXPECT_ACCEL === '1' && !accelerationDisabledByEnvironment())('is active where CI expects it', () => {
    expect(accelerationStatus()).toMatchObject({ active: true });
  });

  it('withAcceleration(false) suspends it for the duration of fn, even when fn throws', async () => {
    const before = activeAccel();
    const inside = await withAcceleration(false, () => [activeAccel(), accelerationStatus().active]);
    expect(inside).toEqual([null, false]);
    await expect(
      withAcceleration(false, () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(activeAccel()).toBe(before);
    expect(await withAcceleration(true, () => activeAccel())).toBe(before);
  });

  it('rejects a thread count that is not a whole number >= 1, naming it', () => {
    expect(() => configureAcceleration({ threads: 0 })).toThrow(/configureAcceleration: 'threads' must be an integer >= 1/);
    expect(() => configureAcceleration({ threads: 2.5 })).toThrow(/'threads'/);
  });
});

/** Runs a module snippet in a fresh Node process on the package's TypeScript sources. */
function runIsolated(code: string, env: Record<string, string | undefined>): { status: number | null; stdout: string; stderr: string } {
  const index = new URL('./index.ts', import.meta.url).href;
  const result = spawnSync(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', '--input-type=module', '-e', code.replaceAll('INDEX', JSON.stringify(index))],
    { cwd: fileURLToPath(new URL('..', import.meta.url)), encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 },
  );
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const ISOLATED_MATMUL = `
  import * as tf from '@tensorflow/tfjs';
  const { initBackend } = await import(INDEX);
  const report = await initBackend({ backend: 'wasm' });
  const product = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5, 6], [7, 8]]), true, false);
  console.log(JSON.stringify({ acceleration: report.acceleration, values: Array.from(product.dataSync()) }));
`;

describe('fallback in a fresh process', () => {
  it('without the OpenBLAS runtime: reports why and how to enable it, and still computes on wasm', () => {
    const { status, stdout, stderr } = runIsolated(ISOLATED_MATMUL, {
      MOEPP_ACCEL: undefined,
      MOEPP_BLAS_LIBRARY: '/nonexistent/libopenblas.so.0',
    });
    expect(stderr).toBe('');
    expect(status).toBe(0);
    const out = JSON.parse(stdout) as { acceleration: { active: boolean; reason: string }; values: number[] };
    expect(out.values).toEqual([26, 30, 38, 44]);
    expect(out.acceleration.active).toBe(false);
    if (addon !== null) {
      expect(out.acceleration.reason).toBe(
        'the OpenBLAS runtime was not found (tried /nonexistent/libopenblas.so.0); to enable it on Debian/Ubuntu: `apt-get install libopenblas0-pthread`',
      );
    }
  });

  it('MOEPP_ACCEL=off forces the fallback', () => {
    const { status, stdout } = runIsolated(ISOLATED_MATMUL, { MOEPP_ACCEL: 'off' });
    expect(status).toBe(0);
    const out = JSON.parse(stdout) as { acceleration: unknown; values: number[] };
    expect(out.values).toEqual([26, 30, 38, 44]);
    expect(out.acceleration).toEqual({ active: false, reason: 'disabled by MOEPP_ACCEL=off' });
  });
});

describe.runIf(addon !== null)('native addon', () => {
  const native = addon as NativeAccel;

  it('load() reports a missing library without throwing (fresh process)', () => {
    const addonPath = fileURLToPath(new URL('../native/build/Release/accel.node', import.meta.url));
    const result = spawnSync(
      process.execPath,
      ['-e', `const a = require(${JSON.stringify(addonPath)}); console.log(JSON.stringify(a.load(['/nonexistent/libopenblas.so.0'], 1, 0)))`],
      { encoding: 'utf8' },
    );
    const loaded = JSON.parse(result.stdout) as { ok: boolean; error: string };
    expect(loaded.ok).toBe(false);
    expect(loaded.error).toContain('/nonexistent/libopenblas.so.0');
  });

  describe.runIf(blasLoaded)('sgemm', () => {
    const TRANSPOSES = [
      [false, false],
      [false, true],
      [true, false],
      [true, true],
    ] as const;

    it.each(TRANSPOSES)('transposeA %s, transposeB %s: matches a plain loop, with alpha, beta and padded leading dims', (transposeA, transposeB) => {
      const [m, n, k] = [5, 7, 3];
      const lda = (transposeA ? m : k) + 2;
      const ldb = (transposeB ? k : n) + 1;
      const ldc = n + 3;
      const aRows = transposeA ? k : m;
      const bRows = transposeB ? n : k;
      const heap = new Float32Array(4096);
      heap.set(randomArray(heap.length, 1));
      const [aOffset, bOffset, cOffset] = [16, 512, 1024];
      const expected = heap.slice(cOffset, cOffset + m * ldc);
      referenceGemm(
        transposeA, transposeB, m, n, k, 0.5,
        heap.subarray(aOffset, aOffset + aRows * lda), lda,
        heap.subarray(bOffset, bOffset + bRows * ldb), ldb,
        2, expected, ldc,
      );
      native.sgemm(heap.buffer, transposeA, transposeB, m, n, k, 0.5, aOffset, lda, 0, bOffset, ldb, 0, 2, cOffset, ldc, 0, 1);
      expectArraysClose(heap.subarray(cOffset, cOffset + m * ldc), expected);
    });

    it('runs a strided batch, a stride of 0 repeating an operand', () => {
      const [m, n, k, batch] = [4, 3, 6, 3];
      const heap = randomArray(2048, 2);
      const [aOffset, bOffset, cOffset] = [0, 200, 400];
      const expected = new Float32Array(batch * m * n);
      for (let i = 0; i < batch; i++) {
        referenceGemm(false, true, m, n, k, 1, heap.subarray(aOffset + i * m * k), k, heap.subarray(bOffset), k, 0, expected.subarray(i * m * n), n);
      }
      native.sgemm(heap.buffer as ArrayBuffer, false, true, m, n, k, 1, aOffset, k, m * k, bOffset, k, 0, 0, cOffset, n, m * n, batch);
      expectArraysClose(heap.subarray(cOffset, cOffset + batch * m * n), expected);
    });

    it('large products, split into row or column blocks over 2 threads, agree with the float64 reference', () => {
      // >= 1M multiply-adds each: the addon splits them; m < n splits columns, m >= n rows; leading
      // dimensions wider than the rows; beta != 0 so that every block must read its own part of C.
      const previous = native.setThreads(2);
      try {
        // 2 threads, then 3: a helper started after jobs have run must wait for the next one
        for (const [m, n, k, threads] of [[300, 200, 40, 2], [40, 900, 64, 2], [1000, 40, 50, 3], [300, 200, 40, 3]] as const) {
          native.setThreads(threads);
          for (const [transposeA, transposeB] of [[false, false], [true, false], [false, true], [true, true]] as const) {
            const [lda, ldb, ldc] = [(transposeA ? m : k) + 3, (transposeB ? k : n) + 5, n + 7];
            const aRows = transposeA ? k : m;
            const bRows = transposeB ? n : k;
            const a = randomArray(aRows * lda, m + k);
            const b = randomArray(bRows * ldb, n + k);
            const c = randomArray(m * ldc, m + n);
            const heap = new Float32Array(a.length + b.length + c.length);
            heap.set(a, 0);
            heap.set(b, a.length);
            heap.set(c, a.length + b.length);
            native.sgemm(heap.buffer, transposeA, transposeB, m, n, k, 0.5, 0, lda, 0, a.length, ldb, 0, 0.25, a.length + b.length, ldc, 0, 1);
            const expected = c.slice();
            referenceGemm(transposeA, transposeB, m, n, k, 0.5, a, lda, b, ldb, 0.25, expected, ldc);
            expectArraysClose(heap.subarray(a.length + b.length), expected, 1e-4);
          }
        }
      } finally {
        native.setThreads(previous);
      }
    });

    it('k = 0 scales C by beta without reading A or B', () => {
      const heap = new Float32Array([1, 2, 3, 4]);
      native.sgemm(heap.buffer, false, false, 2, 2, 0, 1, 0, 1, 0, 0, 2, 0, 0.5, 0, 2, 0, 1);
      expect(Array.from(heap)).toEqual([0.5, 1, 1.5, 2]);
    });

    it('bounds-checks every operand against the heap and writes nothing when a check fails', () => {
      const heap = randomArray(256, 3);
      const before = heap.slice();
      const call = (overrides: Partial<Record<string, number>>) => () => {
        const p = { m: 4, n: 4, k: 4, aOffset: 0, lda: 4, strideA: 0, bOffset: 16, ldb: 4, strideB: 0, cOffset: 32, ldc: 4, strideC: 16, batch: 1, ...overrides };
        native.sgemm(heap.buffer as ArrayBuffer, false, false, p.m, p.n, p.k, 1, p.aOffset, p.lda, p.strideA, p.bOffset, p.ldb, p.strideB, 0, p.cOffset, p.ldc, p.strideC, p.batch);
      };
      expect(call({ cOffset: 250 })).toThrow(/accel\.sgemm: 'c' \[250, 266\) is outside the heap of 256 floats/);
      expect(call({ aOffset: 241 })).toThrow(/'a' .* outside the heap/);
      expect(call({ bOffset: 256 })).toThrow(/'b' .* outside the heap/);
      expect(call({ batch: 15 })).toThrow(/'c' .* outside the heap/); // C's batches run past the end
      expect(call({ batch: 2, strideA: 241 })).toThrow(/'a' .* outside the heap/);
      expect(call({ batch: 2, strideC: 8 })).toThrow(/must not make the output matrices overlap/);
      expect(call({ lda: 3 })).toThrow(/leading dimension of 'a' \(3\) must be >= its row length 4/);
      expect(call({ m: -1 })).toThrow(RangeError);
      expect(call({ m: 1.5 })).toThrow(/whole number/);
      expect(call({ aOffset: 2 ** 60 })).toThrow(RangeError);
      expect(call({ batch: 2, strideA: 2 ** 52 })).toThrow(RangeError);
      expect(() => native.sgemm(new Int32Array(4) as unknown as ArrayBuffer, false, false, 1, 1, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1)).toThrow(TypeError);
      expect(Array.from(heap)).toEqual(Array.from(before));
    });

    it('accepts a Float32Array view (its whole length is the bound)', () => {
      const heap = new Float32Array([1, 2, 3, 4, 0, 0, 0, 0]);
      native.sgemm(heap.subarray(0, 8) as unknown as ArrayBuffer, false, false, 2, 2, 1, 1, 0, 1, 0, 2, 2, 0, 0, 4, 2, 0, 1);
      expect(Array.from(heap.subarray(4))).toEqual([3, 4, 6, 8]);
      expect(() => native.sgemm(heap.subarray(0, 4) as unknown as ArrayBuffer, false, false, 2, 2, 1, 1, 0, 1, 0, 2, 2, 0, 0, 4, 2, 0, 1)).toThrow(RangeError);
    });
  });

  describe('fused elementwise kernels', () => {
    const silu = (x: number): number => x / (1 + Math.exp(-x));

    it('swiglu and its gradient match the formulas, including saturated inputs', () => {
      const [rows, f] = [3, 5];
      const heap = new Float32Array(256);
      const up = randomArray(rows * 2 * f, 4).map((v) => v * 4);
      up.set([-100, 100, 0, -87.5, 88.5], 0);
      const dy = randomArray(rows * f, 5);
      heap.set(up, 0);
      heap.set(dy, 40);
      native.swiglu(heap.buffer, 0, 60, rows, f);
      native.swigluGrad(heap.buffer, 40, 0, 80, rows, f);
      const out: number[] = [];
      const dUp = new Array<number>(rows * 2 * f).fill(0);
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < f; j++) {
          const a = up[r * 2 * f + j] as number;
          const b = up[r * 2 * f + f + j] as number;
          const g = dy[r * f + j] as number;
          const s = 1 / (1 + Math.exp(-a));
          out.push(silu(a) * b);
          dUp[r * 2 * f + j] = g * b * s * (1 + a * (1 - s));
          dUp[r * 2 * f + f + j] = g * silu(a);
        }
      }
      expectArraysClose(heap.subarray(60, 60 + rows * f), out, 2e-6);
      expectArraysClose(heap.subarray(80, 80 + rows * 2 * f), dUp, 2e-6);
      expect(heap.subarray(60, 60 + rows * f).every(Number.isFinite)).toBe(true);
    });

    it('gelu and its gradient match the formulas (erf to 1.5e-7)', () => {
      const n = 64;
      const heap = new Float32Array(256);
      const x = randomArray(n, 9).map((v) => v * 3);
      x.set([-40, 40, 0, 1e-8], 0);
      const dy = randomArray(n, 10);
      heap.set(x, 0);
      heap.set(dy, 64);
      native.gelu(heap.buffer, 0, 128, n);
      native.geluGrad(heap.buffer, 64, 0, 192, n);
      // erf from its series / continued fraction in double, via Math functions: erf(z) = 1 - erfc(z)
      const erf = (z: number): number => {
        // Abramowitz & Stegun 7.1.28 is too coarse; integrate exp(-t²) with Simpson's rule instead
        const steps = 2000;
        const h = z / steps;
        let sum = 0;
        for (let i = 0; i <= steps; i++) {
          const t = i * h;
          sum += (i === 0 || i === steps ? 1 : i % 2 === 1 ? 4 : 2) * Math.exp(-t * t);
        }
        return ((2 / Math.sqrt(Math.PI)) * sum * h) / 3;
      };
      const y: number[] = [];
      const dx: number[] = [];
      x.forEach((v, i) => {
        const cdf = 0.5 * (1 + erf(v / Math.SQRT2));
        y.push(v * cdf);
        dx.push((dy[i] as number) * (cdf + (v * Math.exp(-0.5 * v * v)) / Math.sqrt(2 * Math.PI)));
      });
      expectArraysClose(heap.subarray(128, 128 + n), y, 1e-6);
      expectArraysClose(heap.subarray(192, 192 + n), dx, 1e-6);
      expect(() => native.gelu(heap.buffer, 0, 10, n)).toThrow("accel.gelu: 'y' overlaps 'x'");
      expect(() => native.geluGrad(heap.buffer, 64, 0, 250, n)).toThrow(/'dx' .* outside the heap/);
    });

    it('rmsNorm and its gradient match the formulas', () => {
      const [rows, d, eps] = [4, 6, 1e-5];
      const heap = new Float32Array(512);
      const x = randomArray(rows * d, 6);
      const weight = randomArray(d, 7);
      const dy = randomArray(rows * d, 8);
      heap.set(x, 0);
      heap.set(weight, 32);
      heap.set(dy, 40);
      native.rmsNorm(heap.buffer, 0, 32, 100, 200, rows, d, eps);
      native.rmsNormGrad(heap.buffer, 40, 0, 32, 200, 300, 400, rows, d);
      const y: number[] = [];
      const dx: number[] = [];
      const dWeight = new Array<number>(d).fill(0);
      for (let r = 0; r < rows; r++) {
        const row = Array.from(x.subarray(r * d, (r + 1) * d));
        const s = 1 / Math.sqrt(row.reduce((acc, v) => acc + v * v, 0) / d + eps);
        const g = row.map((_, j) => (dy[r * d + j] as number) * (weight[j] as number));
        const dot = g.reduce((acc, gj, j) => acc + gj * (row[j] as number), 0);
        row.forEach((v, j) => {
          y.push(v * s * (weight[j] as number));
          dx.push(s * (g[j] as number) - (s * s * s * dot * v) / d);
          dWeight[j] = (dWeight[j] as number) + (dy[r * d + j] as number) * v * s;
        });
      }
      expectArraysClose(heap.subarray(100, 100 + rows * d), y);
      expectArraysClose(heap.subarray(300, 300 + rows * d), dx);
      expectArraysClose(heap.subarray(400, 400 + d), dWeight);
    });

    it('adamw matches the float32 formula bit for bit (no FMA), for sizes around the vector width', () => {
      const f32 = Math.fround;
      const [beta1, beta2, epsilon, lr, t] = [0.9, 0.95, 1e-8, 3e-3, 7];
      const [stepSize, correction, decay] = [lr / (1 - beta1 ** t), 1 / Math.sqrt(1 - beta2 ** t), 1 - lr * 0.1];
      for (const [n, scale] of [[1, 1], [7, 0.37], [8, 1], [9, 0.5], [67, 0.123]] as const) {
        const heap = new Float32Array(7 * 80);
        heap.set(randomArray(4 * 80, n));
        for (let i = 240; i < 320; i++) heap[i] = (heap[i] as number) ** 2 * 1e-3; // second moments >= 0
        native.adamw(heap.buffer, 0, 80, 160, 240, 320, 400, 480, n, beta1, beta2, epsilon, stepSize, correction, decay, scale);
        for (let i = 0; i < n; i++) {
          const [w, raw, m, v] = [heap[i], heap[80 + i], heap[160 + i], heap[240 + i]] as number[] as [number, number, number, number];
          const g = f32(raw * f32(scale)); // the clipping factor, applied first
          const first = f32(f32(m * f32(beta1)) + f32(g * f32(1 - beta1)));
          const second = f32(f32(v * f32(beta2)) + f32(f32(g * g) * f32(1 - beta2)));
          const denominator = f32(f32(f32(Math.sqrt(second)) * f32(correction)) + f32(epsilon));
          expect([heap[320 + i], heap[400 + i], heap[480 + i]]).toEqual([f32(f32(w * f32(decay)) - f32(f32(first / denominator) * f32(stepSize))), first, second]);
        }
        expect(heap[320 + n]).toBe(0); // nothing written past n
      }
    });

    it('adamw bounds-checks its spans and refuses outputs that overlap an input or each other', () => {
      const heap = new Float32Array(64);
      const call = (offsets: number[], n = 8) => () => native.adamw(heap.buffer, ...(offsets as [number, number, number, number, number, number, number]), n, 0.9, 0.95, 1e-8, 1e-3, 1, 1, 1);
      expect(call([0, 8, 16, 24, 32, 40, 60])).toThrow("accel.adamw: 'secondMomentOut' [60, 68) is outside the heap of 64 floats");
      expect(call([0, 8, 16, 24, 32, 36, 48])).toThrow("accel.adamw: 'weightOut' overlaps 'firstMomentOut'");
      expect(call([0, 8, 16, 24, 26, 40, 48])).toThrow("accel.adamw: 'weightOut' overlaps 'secondMoment'");
      expect(call([0, 0, 0, 0, 32, 40, 48])).not.toThrow(); // inputs may share data
      expect(() => native.adamw(heap.buffer, 0, 8, 16, 24, 32, 40, 48, 8, Number.NaN, 0.95, 1e-8, 1e-3, 1, 1, 1)).toThrow("accel.adamw: argument 'beta1' must be a finite number");
      // @ts-expect-error -- the old 15-argument call (no gradientScale)
      expect(() => native.adamw(heap.buffer, 0, 8, 16, 24, 32, 40, 48, 8, 0.9, 0.95, 1e-8, 1e-3, 1, 1)).toThrow('accel.adamw: expected 16 arguments, got 15');
    });

    it('swiglu, swigluGrad, gelu, geluGrad and adamw give the same bits on 2 threads (in row / element blocks) as on 1', () => {
      const [rows, f, n] = [301, 257, 100_003]; // several blocks each, ragged last block
      const run = (threads: number): Float32Array => {
        const previous = native.setThreads(threads);
        try {
          const heap = new Float32Array(2 * rows * f + rows * f + 2 * rows * f + rows * f + 7 * n + 4 * n);
          heap.set(randomArray(heap.length, 51));
          const [up, y, dUp, dy, adam] = [0, 2 * rows * f, 3 * rows * f, 5 * rows * f, 6 * rows * f];
          for (let i = adam + 3 * n; i < adam + 4 * n; i++) heap[i] = Math.abs(heap[i] as number); // second moments >= 0
          native.swiglu(heap.buffer, up, y, rows, f);
          native.swigluGrad(heap.buffer, dy, up, dUp, rows, f);
          native.adamw(heap.buffer, adam, adam + n, adam + 2 * n, adam + 3 * n, adam + 4 * n, adam + 5 * n, adam + 6 * n, n, 0.9, 0.95, 1e-8, 1e-3, 1.2, 0.999, 0.7);
          const gelu = adam + 7 * n; // x, y, dy, dx
          native.gelu(heap.buffer, gelu, gelu + n, n);
          native.geluGrad(heap.buffer, gelu + 2 * n, gelu, gelu + 3 * n, n);
          return heap;
        } finally {
          native.setThreads(previous);
        }
      };
      const [one, two] = [run(1), run(2)];
      const differing = one.findIndex((value, i) => !Object.is(value, two[i]));
      expect(differing, `first differing element ${differing}`).toBe(-1);
    });

    it('sumOfSquares adds the squares of every span in float64 and bounds-checks each span', () => {
      const heap = new Float32Array(64);
      heap.set(randomArray(64, 21));
      const exact = (from: number, to: number) => Array.from(heap.subarray(from, to)).reduce((sum, x) => sum + x * x, 0);
      expect(native.sumOfSquares(heap.buffer, new Float64Array([0, 19, 30, 0, 40, 24]))).toBeCloseTo(exact(0, 19) + exact(40, 64), 12);
      expect(native.sumOfSquares(heap.buffer, new Float64Array([]))).toBe(0);
      expect(() => native.sumOfSquares(heap.buffer, new Float64Array([0, 8, 60, 8]))).toThrow("accel.sumOfSquares: 'span 1' [60, 68) is outside the heap of 64 floats");
      expect(() => native.sumOfSquares(heap.buffer, new Float64Array([0, 8, 3]))).toThrow("accel.sumOfSquares: argument 'spans' must be a Float64Array of (offset, length) pairs");
      expect(() => native.sumOfSquares(heap.buffer, new Float64Array([0.5, 8]))).toThrow('accel.sumOfSquares: span 0: offset and length must be whole numbers >= 0, got (0.5, 8)');
    });

    it('sgemmList runs independent products (in parallel) with the same values as one sgemm each', () => {
      // 6 products of different sizes and transposes, outputs side by side after the operands
      const heap = new Float32Array(4096);
      heap.set(randomArray(2048, 31));
      const shapes = [
        [false, false, 5, 7, 3],
        [true, false, 4, 6, 9],
        [false, true, 8, 2, 5],
        [true, true, 3, 3, 3],
        [false, false, 1, 9, 4],
        [false, false, 6, 5, 0], // k = 0 writes beta·C = 0
      ] as const;
      let out = 2048;
      const products = shapes.map(([ta, tb, m, n, k], i) => {
        const product = { ta, tb, m, n, k, a: i * 100, lda: Math.max(1, ta ? m : k), b: 1000 + i * 100, ldb: Math.max(1, tb ? k : n), c: out, ldc: n };
        out += m * n + 3;
        return product;
      });
      heap.fill(7, 2048); // outputs start non-zero: beta = 0 must overwrite them
      const fields = new Float64Array(products.flatMap((p) => [p.ta ? 1 : 0, p.tb ? 1 : 0, p.m, p.n, p.k, 1, p.a, p.lda, p.b, p.ldb, 0, p.c, p.ldc]));
      native.sgemmList(heap.buffer, fields);
      const expected = new Float32Array(heap);
      expected.fill(7, 2048);
      for (const p of products) native.sgemm(expected.buffer, p.ta, p.tb, p.m, p.n, p.k, 1, p.a, p.lda, 0, p.b, p.ldb, 0, 0, p.c, p.ldc, 0, 1);
      expect(Array.from(heap)).toEqual(Array.from(expected));
      expect(Array.from(heap.subarray(products[5]!.c, products[5]!.c + 30))).toEqual(new Array(30).fill(0));
    });

    it('segmentSum adds rows into their segments (ids int32 in the same heap), skips out-of-range ids, bounds-checks', () => {
      const heap = new Float32Array(128);
      heap.set(randomArray(5 * 3, 41), 0); // x [5, 3]
      const ids = new Int32Array(heap.buffer, 20 * 4, 5);
      ids.set([2, 0, 2, -1, 7]); // -1 and 7 (>= numSegments 4) add nowhere
      heap.fill(9, 40, 52); // out [4, 3] starts non-zero: it is overwritten
      native.segmentSum(heap.buffer, 0, 20, 40, 5, 3, 4);
      const row = (r: number) => Array.from(heap.subarray(r * 3, r * 3 + 3));
      const [r0, r1, r2] = [row(0), row(1), row(2)];
      expect(Array.from(heap.subarray(40, 52))).toEqual([...r1, 0, 0, 0, ...r0.map((v, j) => Math.fround(v + (r2[j] as number))), 0, 0, 0]);
      expect(() => native.segmentSum(heap.buffer, 0, 20, 120, 5, 3, 4)).toThrow("accel.segmentSum: 'out' [120, 132) is outside the heap of 128 floats");
      expect(() => native.segmentSum(heap.buffer, 0, 20, 10, 5, 3, 4)).toThrow("accel.segmentSum: 'out' overlaps 'x'");
      expect(() => native.segmentSum(heap.buffer, 0, 20, 40, 5, 3, -1)).toThrow("accel.segmentSum: argument 'numSegments' must be a whole number in [0, 2147483647], got -1");
    });

    it('transpose permutes 4-byte elements (runs of the kept trailing axes) and checks its layout and spans', () => {
      const heap = new Float32Array(128);
      heap.set(Array.from({ length: 24 }, (_, i) => i)); // x [2, 3, 4] at 0
      native.transpose(heap.buffer, 0, 64, new Float64Array([2, 3, 4, 1, 0, 2])); // -> [3, 2, 4]
      const expected = [0, 1, 2, 3, 12, 13, 14, 15, 4, 5, 6, 7, 16, 17, 18, 19, 8, 9, 10, 11, 20, 21, 22, 23];
      expect(Array.from(heap.subarray(64, 88))).toEqual(expected);
      native.transpose(heap.buffer, 0, 96, new Float64Array([2, 3, 4, 2, 1, 0])); // -> [4, 3, 2], element by element
      expect(Array.from(heap.subarray(96, 102))).toEqual([0, 12, 4, 16, 8, 20]);
      expect(() => native.transpose(heap.buffer, 0, 110, new Float64Array([2, 3, 4, 1, 0, 2]))).toThrow("accel.transpose: 'y' [110, 134) is outside the heap of 128 floats");
      expect(() => native.transpose(heap.buffer, 0, 10, new Float64Array([2, 3, 4, 1, 0, 2]))).toThrow("accel.transpose: 'y' overlaps 'x'");
      expect(() => native.transpose(heap.buffer, 0, 64, new Float64Array([2, 3, 4, 1, 1, 2]))).toThrow("accel.transpose: 'layout' must hold whole dims >= 0 and a permutation of 0..rank-1");
      expect(() => native.transpose(heap.buffer, 0, 64, new Float64Array([2, 3, 4]))).toThrow(TypeError);
    });

    it('copyConstant and copyConstantGrad bounds-check their spans and refuse outputs that overlap an input', () => {
      const heap = new Float32Array(256);
      heap.set(randomArray(256, 61));
      const [n, d, c] = [4, 3, 1]; // x 12, gates 8, mix 8, vectors 3, y 12
      expect(() => native.copyConstant(heap.buffer, 0, 12, 20, 28, 250, n, d, c)).toThrow("accel.copyConstant: 'y' [250, 262) is outside the heap of 256 floats");
      expect(() => native.copyConstant(heap.buffer, 0, 12, 20, 28, 6, n, d, c)).toThrow("accel.copyConstant: 'y' overlaps 'x'");
      expect(() => native.copyConstant(heap.buffer, 0, 12, 20, 28, 40, n, d, 0)).toThrow("accel.copyConstant: argument 'c' must be a whole number in [1, 65536], got 0");
      const before = heap.slice();
      native.copyConstant(heap.buffer, 0, 12, 20, 28, 40, n, d, c);
      expect(Array.from(heap.subarray(0, 20))).toEqual(Array.from(before.subarray(0, 20))); // inputs untouched
      for (let r = 0; r < n; r++) expect((heap[20 + 2 * r] as number) + (heap[21 + 2 * r] as number)).toBeCloseTo(1, 6); // mix: a pairwise softmax
      // dy 64.., x 0, gates 12, mix 20, vectors 28; outputs dx 100, dGates 120, dLogits 140, dVectors 160
      expect(() => native.copyConstantGrad(heap.buffer, 64, 0, 12, 20, 28, 100, 120, 140, 26, n, d, c)).toThrow("accel.copyConstantGrad: 'dVectors' overlaps 'mix'");
      expect(() => native.copyConstantGrad(heap.buffer, 64, 0, 12, 20, 28, 100, 120, 140, 254, n, d, c)).toThrow("accel.copyConstantGrad: 'dVectors' [254, 257) is outside the heap of 256 floats");
      expect(() => native.copyConstantGrad(heap.buffer, 64, 0, 12, 20, 28, 100, 120, 140, 160, n, d, c)).not.toThrow();
    });

    it('sgemmList refuses outputs that overlap another product, spans outside the heap and malformed lists', () => {
      const heap = new Float32Array(256);
      const product = (a: number, b: number, c: number) => [0, 0, 4, 4, 4, 1, a, 4, b, 4, 0, c, 4];
      expect(() => native.sgemmList(heap.buffer, new Float64Array([...product(0, 16, 100), ...product(32, 48, 108)]))).toThrow(
        'accel.sgemmList: the output of product 0 overlaps the output of product 1 (products run in parallel)',
      );
      expect(() => native.sgemmList(heap.buffer, new Float64Array([...product(0, 16, 100), ...product(100, 48, 200)]))).toThrow(
        'accel.sgemmList: the output of product 0 overlaps the a of product 1 (products run in parallel)',
      );
      expect(() => native.sgemmList(heap.buffer, new Float64Array(product(0, 16, 250)))).toThrow("accel.sgemmList: 'c' [250, 266) is outside the heap of 256 floats");
      expect(() => native.sgemmList(heap.buffer, new Float64Array(12))).toThrow('accel.sgemmList: argument \'products\' must hold 13 numbers per product, got 12 numbers');
      expect(() => native.sgemmList(heap.buffer, new Float64Array([...product(0, 16, 100)].map((v, i) => (i === 2 ? -1 : v))))).toThrow(
        "accel.sgemmList: product 0: 'm' must be a whole number in [0, 2147483647], got -1",
      );
      expect(() => native.sgemmList(heap.buffer, new Float64Array([...product(0, 16, 100), ...product(32, 48, 200)]))).not.toThrow();
    });

    it('rotary matches the float32 formula bit for bit (no FMA), and inverse undoes it', () => {
      const f32 = Math.fround;
      const [batch, seqLen, half] = [2, 3, 5];
      const total = batch * seqLen * 2 * half;
      const heap = new Float32Array(4 * 64);
      heap.set(randomArray(total, 9), 0);
      heap.set(randomArray(seqLen * half, 10), 64); // cos
      heap.set(randomArray(seqLen * half, 11), 96); // sin
      native.rotary(heap.buffer, 0, 64, 96, 128, batch, seqLen, half, false);
      for (let b = 0; b < batch; b++) {
        for (let t = 0; t < seqLen; t++) {
          for (let i = 0; i < half; i++) {
            const row = (b * seqLen + t) * 2 * half;
            const [x1, x2, c, s] = [heap[row + i], heap[row + half + i], heap[64 + t * half + i], heap[96 + t * half + i]] as [number, number, number, number];
            expect([heap[128 + row + i], heap[128 + row + half + i]]).toEqual([f32(f32(x1 * c) - f32(x2 * s)), f32(f32(x2 * c) + f32(x1 * s))]);
          }
        }
      }
      expect(heap[128 + total]).toBe(0); // nothing written past the end
      // with cos² + sin² = 1 the inverse rotation gives x back
      for (let j = 0; j < seqLen * half; j++) {
        const angle = 0.1 + j;
        heap[64 + j] = Math.cos(angle);
        heap[96 + j] = Math.sin(angle);
      }
      native.rotary(heap.buffer, 0, 64, 96, 128, batch, seqLen, half, false);
      native.rotary(heap.buffer, 128, 64, 96, 192, batch, seqLen, half, true);
      expectArraysClose(heap.subarray(192, 192 + total), Array.from(heap.subarray(0, total)));
    });

    it('rotary bounds-checks its spans and refuses an output that overlaps an input', () => {
      const heap = new Float32Array(64);
      expect(() => native.rotary(heap.buffer, 0, 16, 24, 50, 2, 2, 2, false)).toThrow("accel.rotary: 'y' [50, 66) is outside the heap of 64 floats");
      expect(() => native.rotary(heap.buffer, 0, 60, 24, 32, 1, 2, 4, false)).toThrow("accel.rotary: 'cos' [60, 68) is outside the heap of 64 floats");
      expect(() => native.rotary(heap.buffer, 0, 16, 20, 4, 1, 2, 2, false)).toThrow("accel.rotary: 'y' overlaps 'x'");
      expect(() => native.rotary(heap.buffer, 0, 16, 24, 14, 1, 2, 2, false)).toThrow("accel.rotary: 'y' overlaps 'cos'");
      expect(() => native.rotary(heap.buffer, 0, 8, 16, 24, 2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1, false)).toThrow(RangeError);
    });

    it('bounds-check their spans', () => {
      const heap = new Float32Array(64);
      expect(() => native.swiglu(heap.buffer, 0, 60, 2, 4)).toThrow(/accel\.swiglu: 'out' \[60, 68\) is outside the heap of 64 floats/);
      expect(() => native.swigluGrad(heap.buffer, 0, 50, 0, 2, 4)).toThrow(/'up' .* outside/);
      expect(() => native.rmsNorm(heap.buffer, 0, 62, 8, 16, 2, 4, 1e-6)).toThrow(/'weight' .* outside/);
      expect(() => native.rmsNormGrad(heap.buffer, 0, 8, 16, 20, 30, 62, 2, 4)).toThrow(/'dWeight' .* outside/);
      expect(() => native.swiglu(heap.buffer, 0, 8, 2 ** 31, 2 ** 31)).toThrow(RangeError);
      // outputs must not overlap inputs (the kernels read and write in one pass)
      expect(() => native.swiglu(heap.buffer, 0, 4, 2, 4)).toThrow("accel.swiglu: 'out' overlaps 'up'");
      expect(() => native.swigluGrad(heap.buffer, 0, 16, 4, 2, 4)).toThrow("accel.swigluGrad: 'dUp' overlaps 'dy'");
      expect(() => native.rmsNorm(heap.buffer, 0, 8, 4, 16, 2, 4, 1e-6)).toThrow("accel.rmsNorm: 'y' overlaps 'x'");
      expect(() => native.rmsNormGrad(heap.buffer, 0, 8, 16, 20, 24, 30, 2, 4)).toThrow("accel.rmsNormGrad: 'dx' overlaps 'dWeight'");
    });
  });
});

describe.runIf(addon !== null)('native addon: causal softmax of attention scores', () => {
  const native = addon as NativeAccel;

  /** The causal softmax of `matrices` blocks [t, t] in double: row i over j <= i of scale·s_ij, 0 after. */
  function referenceSoftmax(scores: Float32Array, matrices: number, t: number, scale: number): number[] {
    const out = new Array<number>(matrices * t * t).fill(0);
    for (let row = 0; row < matrices * t; row++) {
      const visible = (row % t) + 1;
      const z = Array.from(scores.subarray(row * t, row * t + visible), (s) => scale * s);
      const largest = Math.max(...z);
      const total = z.reduce((sum, value) => sum + Math.exp(value - largest), 0);
      z.forEach((value, j) => (out[row * t + j] = Math.exp(value - largest) / total));
    }
    return out;
  }

  it.each([0.7, -1.3])('causalSoftmax (scale %s) matches a float64 reference, gives exactly 0 above the diagonal and is the same in place', (scale) => {
    const [matrices, t] = [3, 11]; // rows of 1..11 visible keys: below, at and above the vector width
    const size = matrices * t * t;
    const heap = new Float32Array(3 * 400);
    heap.set(randomArray(size, 40).map((v) => v * 3), 0);
    heap.fill(5, 400); // probs and the in-place copy start non-zero
    heap.set(heap.subarray(0, size), 800);
    native.causalSoftmax(heap.buffer, 0, 400, matrices, t, scale);
    const probs = heap.subarray(400, 400 + size);
    expectArraysClose(probs, referenceSoftmax(heap.subarray(0, size), matrices, t, scale), 1e-6);
    for (let row = 0; row < matrices * t; row++) {
      for (let j = (row % t) + 1; j < t; j++) expect(probs[row * t + j]).toBe(0);
    }
    expect(heap[400 + size]).toBe(5); // nothing written past the end
    native.causalSoftmax(heap.buffer, 800, 800, matrices, t, scale); // in place
    expect(Array.from(heap.subarray(800, 800 + size))).toEqual(Array.from(probs));
  });

  it('causalSoftmaxGrad matches scale·P⊙(dP − rowsum(P⊙dP)) in float64, 0 above the diagonal, in place and out of place', () => {
    const [matrices, t, scale] = [2, 10, 0.35];
    const size = matrices * t * t;
    const heap = new Float32Array(4 * 200);
    heap.set(randomArray(size, 41), 0);
    native.causalSoftmax(heap.buffer, 0, 0, matrices, t, 1); // P at 0
    heap.set(randomArray(size, 42), 200); // dP at 200, every element set (also above the diagonal)
    heap.set(heap.subarray(200, 200 + size), 600); // a copy for the in-place call
    heap.fill(5, 400, 600);
    native.causalSoftmaxGrad(heap.buffer, 0, 200, 400, matrices, t, scale);
    const expected = new Array<number>(size).fill(0);
    for (let row = 0; row < matrices * t; row++) {
      const visible = (row % t) + 1;
      let weighted = 0;
      for (let j = 0; j < visible; j++) weighted += (heap[row * t + j] as number) * (heap[200 + row * t + j] as number);
      for (let j = 0; j < visible; j++) expected[row * t + j] = scale * (heap[row * t + j] as number) * ((heap[200 + row * t + j] as number) - weighted);
    }
    const dScores = heap.subarray(400, 400 + size);
    expectArraysClose(dScores, expected, 1e-6);
    for (let row = 0; row < matrices * t; row++) {
      for (let j = (row % t) + 1; j < t; j++) expect(dScores[row * t + j]).toBe(0);
    }
    native.causalSoftmaxGrad(heap.buffer, 0, 600, 600, matrices, t, scale); // in place over dP
    expect(Array.from(heap.subarray(600, 600 + size))).toEqual(Array.from(dScores));
  });

  it('both bounds-check every span, refuse partial overlaps and bad numbers, and write nothing when a check fails', () => {
    const heap = randomArray(64, 43);
    const buffer = heap.buffer as ArrayBuffer;
    const before = heap.slice();
    expect(() => native.causalSoftmax(buffer, 0, 40, 2, 4, 1)).toThrow("accel.causalSoftmax: 'probs' [40, 72) is outside the heap of 64 floats");
    expect(() => native.causalSoftmax(buffer, 50, 0, 1, 4, 1)).toThrow("accel.causalSoftmax: 'scores' [50, 66) is outside the heap of 64 floats");
    expect(() => native.causalSoftmax(buffer, 0, 8, 2, 4, 1)).toThrow("accel.causalSoftmax: 'probs' overlaps 'scores'");
    expect(() => native.causalSoftmax(buffer, 0, 0, 2 ** 31 - 1, 2 ** 31 - 1, 1)).toThrow('accel.causalSoftmax: a size overflows');
    expect(() => native.causalSoftmax(buffer, 0, 0, 2 ** 31 - 1, 2 ** 15, 1)).toThrow(RangeError);
    expect(() => native.causalSoftmax(buffer, 0, 0, 1.5, 4, 1)).toThrow("accel.causalSoftmax: argument 'matrices' must be a whole number in [0, 2147483647], got 1.5");
    expect(() => native.causalSoftmax(buffer, -4, 0, 1, 4, 1)).toThrow(RangeError);
    expect(() => native.causalSoftmax(buffer, 0, 0, 1, 4, Number.NaN)).toThrow("accel.causalSoftmax: argument 'scale' must be a finite number");
    expect(() => native.causalSoftmaxGrad(buffer, 0, 16, 56, 1, 4, 1)).toThrow("accel.causalSoftmaxGrad: 'dScores' [56, 72) is outside the heap of 64 floats");
    expect(() => native.causalSoftmaxGrad(buffer, 0, 60, 32, 1, 4, 1)).toThrow("accel.causalSoftmaxGrad: 'dProbs' [60, 76) is outside the heap of 64 floats");
    expect(() => native.causalSoftmaxGrad(buffer, 0, 32, 8, 1, 4, 1)).toThrow("accel.causalSoftmaxGrad: 'dScores' overlaps 'probs'");
    expect(() => native.causalSoftmaxGrad(buffer, 0, 16, 20, 1, 4, 1)).toThrow("accel.causalSoftmaxGrad: 'dScores' overlaps 'dProbs'");
    expect(() => native.causalSoftmaxGrad(buffer, 0, 16, 32, 2 ** 31 - 1, 2 ** 31 - 1, 1)).toThrow('accel.causalSoftmaxGrad: a size overflows');
    expect(() => native.causalSoftmaxGrad(new Int32Array(64) as unknown as ArrayBuffer, 0, 16, 32, 1, 4, 1)).toThrow(TypeError);
    expect(Array.from(heap)).toEqual(Array.from(before));
    // in place over dP, and a zero-sized call, are allowed
    expect(() => native.causalSoftmaxGrad(buffer, 0, 16, 16, 1, 4, 1)).not.toThrow();
    expect(() => native.causalSoftmax(buffer, 64, 64, 0, 4, 1)).not.toThrow();
  });

  it.runIf(blasLoaded)('sgemmList lets products write side by side into column blocks of one matrix (heads into [T, H·hd]), and refuses ones that share an element', () => {
    // H = 3 heads, T = 4, hd = 2: head h's [T, hd] product goes to columns [h·hd, (h+1)·hd) of a [T, 6] output
    const [heads, t, hd] = [3, 4, 2];
    const heap = new Float32Array(512);
    heap.set(randomArray(200, 44));
    const out = 300;
    const head = (h: number, c = out + h * hd) => [0, 0, t, hd, t, 1, h * t * t, t, 100 + h * t * hd, hd, 0, c, heads * hd]; // [T, T]·[T, hd]
    native.sgemmList(heap.buffer, new Float64Array([0, 1, 2].flatMap((h) => head(h))));
    const expected = new Float32Array(heap);
    expected.fill(0, out, out + t * heads * hd);
    for (let h = 0; h < heads; h++) native.sgemm(expected.buffer, false, false, t, hd, t, 1, h * t * t, t, 0, 100 + h * t * hd, hd, 0, 0, out + h * hd, heads * hd, 0, 1);
    expect(Array.from(heap)).toEqual(Array.from(expected));
    // one column of overlap, or the last row of one block on the first of another: refused
    expect(() => native.sgemmList(heap.buffer, new Float64Array([...head(0), ...head(1, out + 1)]))).toThrow(
      'accel.sgemmList: the output of product 0 overlaps the output of product 1 (products run in parallel)',
    );
    expect(() => native.sgemmList(heap.buffer, new Float64Array([...head(0), ...head(1, out + (t - 1) * heads * hd)]))).toThrow(
      'accel.sgemmList: the output of product 0 overlaps the output of product 1 (products run in parallel)',
    );
    // the next rows after the block: allowed
    expect(() => native.sgemmList(heap.buffer, new Float64Array([...head(0), ...head(1, out + t * heads * hd)]))).not.toThrow();
  });
});

describe.runIf(addon !== null)('native addon: softmax cross-entropy', () => {
  const native = addon as NativeAccel;

  /** Per row: logsumexp, loss and the gradient dy·(softmax − onehot), in float64. */
  function referenceCrossEntropy(logits: Float32Array, targets: Int32Array, dy: Float32Array, v: number): { lse: number[]; loss: number[]; gradient: number[] } {
    const lse: number[] = [];
    const loss: number[] = [];
    const gradient: number[] = [];
    targets.forEach((target, r) => {
      const row = Array.from(logits.subarray(r * v, (r + 1) * v));
      const largest = Math.max(...row);
      const logSumExp = largest + Math.log(row.reduce((sum, x) => sum + Math.exp(x - largest), 0));
      lse.push(logSumExp);
      loss.push(logSumExp - (row[target] as number));
      row.forEach((x, j) => gradient.push((dy[r] as number) * (Math.exp(x - logSumExp) - (j === target ? 1 : 0))));
    });
    return { lse, loss, gradient };
  }

  it.each([
    [5, 13, 1],
    [3, 1, 1],
    [4, 8, 1],
    [6, 37, 60], // logits of ±60 and beyond: exp overflows without the max
  ])('n=%i v=%i (scale %i): loss, lse and the gradient match float64; nothing is written past the outputs', (n, v, scale) => {
    // layout: logits [n, v] | targets [n] int32 | loss [n] | lse [n] | dy [n] | dLogits [n, v] | guard
    const [targetsOffset, lossOffset, lseOffset, dyOffset, dOffset] = [n * v, n * v + n, n * v + 2 * n, n * v + 3 * n, n * v + 4 * n];
    const heap = new Float32Array(2 * n * v + 4 * n + 8).fill(7);
    const logits = randomArray(n * v, n + v).map((x) => x * scale);
    heap.set(logits, 0);
    const targets = new Int32Array(heap.buffer, targetsOffset * 4, n);
    targets.set(Array.from({ length: n }, (_, r) => (r * 5 + 3) % v));
    const dy = randomArray(n, 50);
    heap.set(dy, dyOffset);
    native.softmaxCrossEntropy(heap.buffer, 0, targetsOffset, lossOffset, lseOffset, n, v);
    native.softmaxCrossEntropyGrad(heap.buffer, dyOffset, 0, targetsOffset, lseOffset, dOffset, n, v);
    const expected = referenceCrossEntropy(logits, Int32Array.from(targets), dy, v);
    // exp to ~2e-7 relative, log exact: lse within a few float32 ulps of the row's largest logit
    const tolerance = Math.max(1e-6, 2e-7 * scale);
    expectArraysClose(heap.subarray(lossOffset, lossOffset + n), expected.loss, tolerance);
    expectArraysClose(heap.subarray(lseOffset, lseOffset + n), expected.lse, tolerance);
    expectArraysClose(heap.subarray(dOffset, dOffset + n * v), expected.gradient, tolerance);
    expect(Array.from(heap.subarray(dOffset + n * v))).toEqual(new Array(8).fill(7));
  });

  it('refuses a target outside [0, v), naming the row and the value, before writing anything', () => {
    const heap = randomArray(64, 51);
    const targets = new Int32Array(heap.buffer, 16 * 4, 4); // logits [4, 4] at 0, targets at 16
    targets.set([0, 3, 2, 1]);
    const before = heap.slice();
    const buffer = heap.buffer as ArrayBuffer;
    targets[2] = 4;
    const withBadTarget = heap.slice();
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 20, 24, 4, 4)).toThrow(RangeError);
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 20, 24, 4, 4)).toThrow("accel.softmaxCrossEntropy: 'targets' row 2 holds 4, outside [0, 4)");
    expect(() => native.softmaxCrossEntropyGrad(buffer, 20, 0, 16, 24, 32, 4, 4)).toThrow("accel.softmaxCrossEntropyGrad: 'targets' row 2 holds 4, outside [0, 4)");
    targets[2] = -2;
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 20, 24, 4, 4)).toThrow("accel.softmaxCrossEntropy: 'targets' row 2 holds -2, outside [0, 4)");
    targets[2] = 4;
    expect(Array.from(heap)).toEqual(Array.from(withBadTarget)); // the last row's loss (row 3) was not written either
    targets[2] = 2;
    expect(Array.from(heap)).toEqual(Array.from(before));
  });

  it('bounds-check every span, refuse outputs that overlap an input or each other, and write nothing when a check fails', () => {
    const heap = randomArray(64, 52);
    const targets = new Int32Array(heap.buffer, 16 * 4, 4);
    targets.set([0, 1, 2, 3]);
    const buffer = heap.buffer as ArrayBuffer;
    const before = heap.slice();
    // logits [4, 4] at 0, targets at 16, loss at 20, lse at 24, dy at 28, dLogits at 32
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 62, 24, 4, 4)).toThrow("accel.softmaxCrossEntropy: 'loss' [62, 66) is outside the heap of 64 floats");
    expect(() => native.softmaxCrossEntropy(buffer, 50, 16, 20, 24, 4, 4)).toThrow("accel.softmaxCrossEntropy: 'logits' [50, 66) is outside the heap of 64 floats");
    expect(() => native.softmaxCrossEntropy(buffer, 0, 61, 20, 24, 4, 4)).toThrow("accel.softmaxCrossEntropy: 'targets' [61, 65) is outside the heap of 64 floats");
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 12, 24, 4, 4)).toThrow("accel.softmaxCrossEntropy: 'loss' overlaps 'logits'");
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 18, 24, 4, 4)).toThrow("accel.softmaxCrossEntropy: 'loss' overlaps 'targets'");
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 20, 14, 4, 4)).toThrow("accel.softmaxCrossEntropy: 'lse' overlaps 'logits'");
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 20, 22, 4, 4)).toThrow("accel.softmaxCrossEntropy: 'lse' overlaps 'loss'");
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 20, 24, 2 ** 31 - 1, 2 ** 31 - 1)).toThrow(RangeError);
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 20, 24, 2.5, 4)).toThrow("accel.softmaxCrossEntropy: argument 'n' must be a whole number in [0, 2147483647], got 2.5");
    expect(() => native.softmaxCrossEntropyGrad(buffer, 28, 0, 16, 24, 50, 4, 4)).toThrow("accel.softmaxCrossEntropyGrad: 'dLogits' [50, 66) is outside the heap of 64 floats");
    expect(() => native.softmaxCrossEntropyGrad(buffer, 62, 0, 16, 24, 32, 4, 4)).toThrow("accel.softmaxCrossEntropyGrad: 'dy' [62, 66) is outside the heap of 64 floats");
    expect(() => native.softmaxCrossEntropyGrad(buffer, 28, 0, 16, 24, 8, 4, 4)).toThrow("accel.softmaxCrossEntropyGrad: 'dLogits' overlaps 'logits'");
    expect(() => native.softmaxCrossEntropyGrad(buffer, 40, 0, 16, 24, 32, 4, 4)).toThrow("accel.softmaxCrossEntropyGrad: 'dLogits' overlaps 'dy'");
    expect(() => native.softmaxCrossEntropyGrad(buffer, 28, 0, 16, 44, 32, 4, 4)).toThrow("accel.softmaxCrossEntropyGrad: 'dLogits' overlaps 'lse'");
    expect(() => native.softmaxCrossEntropyGrad(buffer, 28, 20, 34, 24, 32, 1, 4)).toThrow("accel.softmaxCrossEntropyGrad: 'dLogits' overlaps 'targets'");
    expect(() => native.softmaxCrossEntropyGrad(new Int32Array(64) as unknown as ArrayBuffer, 28, 0, 16, 24, 32, 4, 4)).toThrow(TypeError);
    // @ts-expect-error -- a call without v
    expect(() => native.softmaxCrossEntropy(buffer, 0, 16, 20, 24, 4)).toThrow('accel.softmaxCrossEntropy: expected 7 arguments, got 6');
    expect(Array.from(heap)).toEqual(Array.from(before));
    // zero rows touch nothing, wherever the spans point
    expect(() => native.softmaxCrossEntropy(buffer, 64, 64, 64, 64, 0, 4)).not.toThrow();
    expect(() => native.softmaxCrossEntropyGrad(buffer, 64, 64, 64, 64, 64, 0, 4)).not.toThrow();
    expect(Array.from(heap)).toEqual(Array.from(before));
  });
});
