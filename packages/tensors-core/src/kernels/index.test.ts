import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  activeKernelFixes,
  KERNEL_FIXES,
  KERNEL_FIX_BACKENDS,
  registerKernelFixes,
  unregisterKernelFixes,
  withStockKernels,
} from './index.js';

const GRADIENT_FIXES = KERNEL_FIXES.filter((fix) => fix.kind === 'gradient').map((fix) => fix.name);
const WASM_FIXES = KERNEL_FIXES.filter((fix) => fix.backends === 'all' || fix.backends.includes('wasm')).map((fix) => fix.name);
const CPU_FIXES = KERNEL_FIXES.filter((fix) => fix.backends === 'all' || fix.backends.includes('cpu')).map((fix) => fix.name);

/** The registered kernel config objects for every kernel a fix touches, per backend. */
function registeredConfigs(): Map<string, tf.KernelConfig | undefined> {
  const configs = new Map<string, tf.KernelConfig | undefined>();
  for (const fix of KERNEL_FIXES) {
    if (fix.backends === 'all') continue;
    for (const backend of fix.backends) configs.set(`${backend}_${fix.kernelName}`, tf.getKernel(fix.kernelName, backend));
  }
  return configs;
}

function registeredGradients(): Map<string, tf.GradConfig | undefined> {
  return new Map(
    KERNEL_FIXES.filter((fix) => fix.kind === 'gradient').map((fix) => [fix.kernelName, tf.getGradient(fix.kernelName)]),
  );
}

// Every test starts from stock tfjs and ends with the fixes the test setup registered (wasm).
beforeEach(() => {
  unregisterKernelFixes();
});
afterEach(() => {
  unregisterKernelFixes();
  registerKernelFixes('wasm');
});

describe('kernel fix registry', () => {
  it('lists every fix once, with the backends that have kernel fixes', () => {
    const names = KERNEL_FIXES.map((fix) => fix.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toEqual([
      'wasm-batch-matmul',
      'wasm-fused-matmul',
      'unsorted-segment-sum',
      'gather',
      'wasm-one-hot',
      'wasm-sum',
      'wasm-slice',
      'wasm-split',
      'wasm-concat',
      'wasm-identity',
      'wasm-cast',
      'wasm-transpose',
      'wasm-equal',
      'wasm-not-equal',
      'wasm-less',
      'wasm-less-equal',
      'wasm-greater',
      'wasm-greater-equal',
      'unsorted-segment-sum-gradient',
      'topk-gradient',
      'gather-nd-gradient',
      'batch-matmul-gradient',
    ]);
    expect([...KERNEL_FIX_BACKENDS].sort()).toEqual(['cpu', 'wasm']);
  });

  it('registers the fixes of one backend plus the gradient fixes, and reports them', () => {
    expect(activeKernelFixes('wasm')).toEqual([]);
    expect(registerKernelFixes('wasm')).toEqual(WASM_FIXES);
    expect(activeKernelFixes('wasm')).toEqual(WASM_FIXES);
    // cpu sees the (global) gradient fixes but none of its kernel fixes yet
    expect(activeKernelFixes('cpu')).toEqual(GRADIENT_FIXES);
    expect(registerKernelFixes('cpu')).toEqual(CPU_FIXES);
    // a backend with no kernel fixes gets the gradient fixes only
    expect(registerKernelFixes('tensorflow')).toEqual(GRADIENT_FIXES);
  });

  it('is idempotent: registering twice changes nothing', () => {
    registerKernelFixes('wasm');
    const kernels = registeredConfigs();
    const gradients = registeredGradients();
    expect(registerKernelFixes('wasm')).toEqual(WASM_FIXES);
    expect(registeredConfigs()).toEqual(kernels);
    for (const [key, config] of registeredConfigs()) expect(config).toBe(kernels.get(key));
    for (const [name, config] of registeredGradients()) expect(config).toBe(gradients.get(name));
  });

  it('unregistering puts back the very stock configs (and no kernel where tfjs had none)', () => {
    const stockKernels = registeredConfigs();
    const stockGradients = registeredGradients();
    expect(stockKernels.get('wasm_UnsortedSegmentSum')).toBeUndefined();
    registerKernelFixes('wasm');
    registerKernelFixes('cpu');
    expect(tf.getKernel(tf.BatchMatMul, 'wasm')).not.toBe(stockKernels.get('wasm_BatchMatMul'));
    // The kit's config keeps the stock setup function, so a re-initialised backend still sets it up.
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').setupFunc).toBe(stockKernels.get('wasm_BatchMatMul')?.setupFunc);
    expect(unregisterKernelFixes()).toEqual(KERNEL_FIXES.map((fix) => fix.name));
    for (const [key, config] of registeredConfigs()) expect(config).toBe(stockKernels.get(key));
    for (const [name, config] of registeredGradients()) expect(config).toBe(stockGradients.get(name));
    expect(unregisterKernelFixes()).toEqual([]);
  });

  it('unregistering one backend keeps the other backend\'s kernel fixes but removes the global gradient fixes', () => {
    registerKernelFixes('wasm');
    registerKernelFixes('cpu');
    expect(unregisterKernelFixes('cpu')).toEqual(['unsorted-segment-sum', 'gather', ...GRADIENT_FIXES]);
    expect(activeKernelFixes('cpu')).toEqual([]);
    expect(activeKernelFixes('wasm')).toEqual(WASM_FIXES.filter((name) => !GRADIENT_FIXES.includes(name)));
  });

  it('withStockKernels runs on stock kernels and restores exactly the fixes active before, even on a throw', async () => {
    registerKernelFixes('wasm');
    const before = registeredConfigs();
    const seen = await withStockKernels(() => [activeKernelFixes('wasm'), activeKernelFixes('cpu')]);
    expect(seen).toEqual([[], []]);
    expect(activeKernelFixes('wasm')).toEqual(WASM_FIXES);
    expect(activeKernelFixes('cpu')).toEqual(GRADIENT_FIXES); // cpu's kernel fix was not active, and stays off
    for (const [key, config] of registeredConfigs()) expect(config?.kernelFunc).toBe(before.get(key)?.kernelFunc);
    await expect(
      withStockKernels(() => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(activeKernelFixes('wasm')).toEqual(WASM_FIXES);
  });

  it('rejects a backend that is not a name', () => {
    expect(() => registerKernelFixes('')).toThrow("registerKernelFixes: argument 'backend' must be a backend name such as 'wasm' or 'cpu', got ");
    expect(() => activeKernelFixes(42 as unknown as string)).toThrow("activeKernelFixes: argument 'backend' must be a backend name");
  });
});
