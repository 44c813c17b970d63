/**
 * `@moepp/tensors-core`: the base every other package of the kit builds on.
 *
 * - {@link initBackend}: pick cpu / wasm / tensorflow and register the kernel fixes;
 * - {@link SeededRandom} and initialisers: reproducible numbers;
 * - {@link checkShape}, {@link checkNumber}: errors that name the op, the argument, expected and actual;
 * - dispatch primitives for sparse MoE layers; FLOP and parameter accounting.
 *
 * @packageDocumentation
 */
export * from './errors.js';
export * from './random.js';
export * from './backend.js';
export {
  accelerationStatus,
  configureAcceleration,
  withAcceleration,
  ACCEL_ABI_VERSION,
  DEFAULT_BLAS_THREADS,
  DEFAULT_THREAD_TIMEOUT,
  OPENBLAS_CANDIDATES,
  type AccelerationOptions,
  type AccelerationStatus,
} from './accel.js';
export {
  registerKernelFixes,
  unregisterKernelFixes,
  activeKernelFixes,
  withStockKernels,
  KERNEL_FIXES,
  KERNEL_FIX_BACKENDS,
  type KernelFixInfo,
} from './kernels/index.js';
export { swiglu, gelu, rmsNorm, fusedOpsActive } from './fused.js';
export * from './expert-kinds.js';
export * from './dispatch.js';
export * from './accounting.js';
