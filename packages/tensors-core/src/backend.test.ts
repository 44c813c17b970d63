import { availableParallelism } from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
import { accelerationDisabledByEnvironment, accelerationStatus, activeAccel } from './accel.js';
import { initBackend } from './backend.js';
import { ConfigError } from './errors.js';
import { activeKernelFixes, KERNEL_FIXES } from './kernels/index.js';
import { wasmBatchMatMul } from './kernels/wasm-matmul.js';
import { expectNoLeak } from './testing.js';

const fixesFor = (backend: string): string[] =>
  KERNEL_FIXES.filter((fix) => fix.backends === 'all' || fix.backends.includes(backend)).map((fix) => fix.name);

// The test setup chose wasm with the fixes; leave it that way for the files that run after.
afterAll(async () => {
  await initBackend({ backend: 'wasm' });
});

describe('initBackend', () => {
  it('wasm: reports the backend and its kernel fixes', async () => {
    const report = await expectNoLeak(() => initBackend({ backend: 'wasm' }));
    expect(tf.getBackend()).toBe('wasm');
    expect(report.requested).toBe('wasm');
    expect(report.backend).toBe('wasm');
    expect(report.tensorflowPackage).toBeUndefined();
    expect(report.kernelFixes).toEqual(fixesFor('wasm'));
    expect(report.kernelFixes).toContain('wasm-batch-matmul');
    expect(report.summary.startsWith(`tfjs ${tf.version_core} on 'wasm', kernel fixes: ${fixesFor('wasm').join(', ')}; native acceleration`)).toBe(true);
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).toBe(wasmBatchMatMul);
  });

  it('wasm: reports native acceleration, on or off with the reason and how to enable it', async () => {
    const report = await initBackend({ backend: 'wasm' });
    expect(report.acceleration).toEqual(accelerationStatus());
    expect(report.acceleration.active).toBe(activeAccel() !== null);
    if (report.acceleration.active) {
      expect(report.acceleration.threads).toBeGreaterThanOrEqual(1);
      expect(report.acceleration.library).toMatch(/openblas/i);
      expect(report.summary).toContain(`; native acceleration: OpenBLAS sgemm on the wasm heap, ${report.acceleration.threads} thread`);
    } else {
      expect(report.acceleration.reason.length).toBeGreaterThan(10);
      expect(report.summary).toContain(`; native acceleration off: ${report.acceleration.reason}`);
      if (accelerationDisabledByEnvironment()) expect(report.acceleration.reason).toMatch(/^disabled by MOEPP_ACCEL=/);
      // every other reason says how to turn it on
      else expect(report.acceleration.reason).toMatch(/apt-get install|build:native|Linux only/);
    }
  });

  it('wasm: acceleration false and blasThreads switch it off and set the thread count', async () => {
    const off = await initBackend({ backend: 'wasm', acceleration: false });
    expect(off.acceleration).toEqual({ active: false, reason: accelerationDisabledByEnvironment() ? expect.stringMatching(/MOEPP_ACCEL/) : 'disabled by the acceleration option' });
    expect(activeAccel()).toBeNull();
    const one = await initBackend({ backend: 'wasm', blasThreads: 1 });
    if (one.acceleration.active) expect(one.acceleration.threads).toBe(1);
    const again = await initBackend({ backend: 'wasm' });
    if (again.acceleration.active) expect(again.acceleration.threads).toBe(Math.min(2, availableParallelism()));
    await expect(initBackend({ backend: 'wasm', blasThreads: 0 })).rejects.toThrow("initBackend: 'blasThreads' must be an integer >= 1");
    await expect(initBackend({ backend: 'wasm', blasThreads: 1.5 })).rejects.toBeInstanceOf(ConfigError);
  });

  it('cpu: reports the backend and its kernel fixes', async () => {
    const report = await initBackend({ backend: 'cpu' });
    expect(tf.getBackend()).toBe('cpu');
    expect(report.backend).toBe('cpu');
    expect(report.kernelFixes).toEqual(fixesFor('cpu'));
    expect(report.kernelFixes).toContain('unsorted-segment-sum');
    expect(report.kernelFixes).not.toContain('wasm-batch-matmul');
    expect(report.acceleration).toEqual({ active: false, reason: "only the wasm backend uses native acceleration (this is 'cpu')" });
    expect(report.summary).toMatch(/; native acceleration off: only the wasm backend uses native acceleration \(this is 'cpu'\)$/);
  });

  it('auto picks wasm when tfjs-node is not installed', async () => {
    const report = await initBackend();
    expect(report.requested).toBe('auto');
    expect(report.backend).toBe('wasm');
  });

  it('kernelFixes: false gives stock kernels, and says so', async () => {
    await initBackend({ backend: 'wasm' });
    const report = await initBackend({ backend: 'wasm', kernelFixes: false });
    expect(report.kernelFixes).toEqual([]);
    expect(activeKernelFixes('wasm')).toEqual([]);
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).not.toBe(wasmBatchMatMul);
    expect(report.summary).toMatch(/on 'wasm', no kernel fixes; native acceleration off: kernel fixes are off \(stock tfjs kernels\)$/);
    expect(activeAccel()).toBeNull();
    const again = await initBackend({ backend: 'wasm' });
    expect(again.kernelFixes).toEqual(fixesFor('wasm'));
  });

  it("'tensorflow' without tfjs-node installed throws a ConfigError that says how to install it", async () => {
    const attempt = initBackend({ backend: 'tensorflow' });
    await expect(attempt).rejects.toBeInstanceOf(ConfigError);
    await expect(attempt).rejects.toThrow('npm install @tensorflow/tfjs-node@4.22.0');
    await expect(attempt).rejects.toThrow(/@tensorflow\/tfjs-node-gpu/);
  });

  it('an unknown backend name throws a ConfigError naming the value', async () => {
    const attempt = initBackend({ backend: 'webgpu' as never });
    await expect(attempt).rejects.toBeInstanceOf(ConfigError);
    await expect(attempt).rejects.toThrow(
      "initBackend: 'backend' must be one of 'auto', 'cpu', 'wasm', 'tensorflow', got 'webgpu'",
    );
  });
});
