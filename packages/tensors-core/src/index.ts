/**
 * `@moepp/tensors-core`: the base every other package of the kit builds on.
 *
 * - {@link initBackend}: pick cpu / wasm / tensorflow and register the kernel fixes;
 * - {@link SeededRandom} and initialisers: reproducible numbers;
 * - {@link checkShape}, {@link checkNumber}: errors that name the op, the argument, expected and actual;
 * - fused ops ({@link swiglu}, {@link gelu}, {@link rmsNorm}, {@link rotaryEmbedding}) and the optimiser ops {@link adamwUpdate} and {@link sumOfSquares}, one
 *   native kernel each where acceleration is active;
 * - {@link causalAttention}: causal self-attention over every head in one op (one native kernel each
 *   way where acceleration is active);
 * - {@link softmaxCrossEntropy}: the per-token loss of a language model from its logits (one native
 *   kernel each way where acceleration is active);
 * - dispatch primitives for sparse MoE layers, and {@link groupedSwigluFfn} to run every FFN expert
 *   of a layer in one op; FLOP and parameter accounting.
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
export { swiglu, gelu, rmsNorm, rotaryEmbedding, fusedOpsActive } from './fused.js';
export { causalAttention } from './attention.js';
export { softmaxCrossEntropy } from './cross-entropy.js';
export { groupedSwigluFfn } from './grouped-ffn.js';
export { adamwUpdate, sumOfSquares, type AdamWUpdate, type AdamWUpdateScalars } from './optim.js';
export { copyConstantMix } from './copy-constant.js';
export * from './expert-kinds.js';
export * from './dispatch.js';
export * from './accounting.js';
