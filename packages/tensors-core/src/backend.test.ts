import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from 'vitest';
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
    expect(report.summary).toBe(`tfjs ${tf.version_core} on 'wasm', kernel fixes: ${fixesFor('wasm').join(', ')}`);
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).toBe(wasmBatchMatMul);
  });

  it('cpu: reports the backend and its kernel fixes', async () => {
    const report = await initBackend({ backend: 'cpu' });
    expect(tf.getBackend()).toBe('cpu');
    expect(report.backend).toBe('cpu');
    expect(report.kernelFixes).toEqual(fixesFor('cpu'));
    expect(report.kernelFixes).toContain('unsorted-segment-sum');
    expect(report.kernelFixes).not.toContain('wasm-batch-matmul');
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
    expect(report.summary).toMatch(/on 'wasm', no kernel fixes$/);
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
