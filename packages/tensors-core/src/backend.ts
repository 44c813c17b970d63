/**
 * Backend selection. `initBackend` picks a tfjs backend, registers the kit's kernel fixes for it and
 * reports what is active.
 *
 * | backend | what it is | note |
 * |---|---|---|
 * | `wasm` | `@tensorflow/tfjs-backend-wasm`, SIMD, one thread | the fastest backend that installs everywhere; the fixes make it ~15× faster on MoE training |
 * | `cpu` | pure JavaScript | slow but simple; the reference for tests |
 * | `tensorflow` | `@tensorflow/tfjs-node` or `-node-gpu` (libtensorflow) | optional: used only when the user installed one |
 *
 * On `wasm` with the kernel fixes, matmuls (and the fused ops) run on OpenBLAS when the native addon
 * is built and the OpenBLAS runtime is installed: see `accel.ts` and the report's `acceleration`.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { configureAcceleration, deactivateAcceleration, type AccelerationStatus } from './accel.js';
import { checkNumber, checkOneOf, ConfigError } from './errors.js';
import { registerKernelFixes, unregisterKernelFixes } from './kernels/index.js';

/** The backends {@link initBackend} accepts. `auto` picks the fastest one present. */
export type BackendChoice = 'auto' | 'cpu' | 'wasm' | 'tensorflow';

/** The backend names accepted by {@link initBackend}, for CLIs and validation. */
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', 'cpu', 'wasm', 'tensorflow'];

/** Options of {@link initBackend}. */
export interface BackendOptions {
  /** Which backend to use. Default `'auto'`: tensorflow if installed, else wasm. */
  readonly backend?: BackendChoice;
  /**
   * Register the kit's kernel fixes. Default `true`; `false` gives stock tfjs (for benchmarks): it
   * removes this backend's kernel fixes and the global gradient fixes registered earlier.
   */
  readonly kernelFixes?: boolean;
  /** Call `tf.enableProdMode()` (skips debug checks, silences the tfjs-node banner). Default `true`. */
  readonly prodMode?: boolean;
  /**
   * Native acceleration (OpenBLAS `sgemm` on the wasm heap) when the addon is built and OpenBLAS is
   * installed. Default `true`; the environment variable `MOEPP_ACCEL=off` forces `false`. Only the
   * `wasm` backend with kernel fixes uses it.
   */
  readonly acceleration?: boolean;
  /**
   * Threads the native products run on when accelerated. Default: `MOEPP_BLAS_THREADS` if set, else 2 (at most the
   * number of cores). A whole number >= 1.
   */
  readonly blasThreads?: number;
}

/** What {@link initBackend} set up. */
export interface BackendReport {
  /** The backend asked for. */
  readonly requested: BackendChoice;
  /** The tfjs backend now active: `'cpu'`, `'wasm'` or `'tensorflow'`. */
  readonly backend: string;
  /** For `tensorflow`: which npm package provided it. */
  readonly tensorflowPackage?: string;
  /** The kernel fixes active for this backend (empty when `kernelFixes` is false). */
  readonly kernelFixes: readonly string[];
  /**
   * Whether native acceleration is active; if not, why, and how to enable it (e.g. "the OpenBLAS
   * runtime was not found (...); to enable it on Debian/Ubuntu: `apt-get install libopenblas0-pthread`").
   */
  readonly acceleration: AccelerationStatus;
  /** One human-readable line, e.g. for a report header. */
  readonly summary: string;
}

const TENSORFLOW_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

async function loadTensorflow(): Promise<string | null> {
  for (const name of TENSORFLOW_PACKAGES) {
    try {
      await import(/* @vite-ignore */ name);
      return name;
    } catch {
      // not installed (or its native library failed to load): try the next one
    }
  }
  return null;
}


/**
 * Selects and initialises a backend, and registers the kit's kernel fixes for it.
 *
 * Calling it again switches backends. Kernel fixes stay registered for a backend once set, unless a
 * later call for that backend passes `kernelFixes: false`.
 *
 * @param options - see {@link BackendOptions}
 * @returns what is active, see {@link BackendReport}
 * @throws {@link ConfigError} for an unknown backend name, or when `tensorflow` is asked for and neither
 *   `@tensorflow/tfjs-node` nor `@tensorflow/tfjs-node-gpu` is installed (the message says how to install one),
 *   or for a `blasThreads` (or `MOEPP_BLAS_THREADS`) that is not a whole number in [1, 1024]
 */
export async function initBackend(options: BackendOptions = {}): Promise<BackendReport> {
  const requested = checkOneOf('initBackend', 'backend', options.backend ?? 'auto', BACKEND_CHOICES);
  const kernelFixes = options.kernelFixes ?? true;
  if (options.blasThreads !== undefined) {
    checkNumber('initBackend', 'blasThreads', options.blasThreads, { integer: true, min: 1, max: 1024 });
  }
  if (options.prodMode ?? true) tf.enableProdMode();

  let backend: string;
  let tensorflowPackage: string | undefined;
  if (requested === 'tensorflow' || requested === 'auto') {
    const loaded = await loadTensorflow();
    if (loaded === null && requested === 'tensorflow') {
      throw new ConfigError(
        "initBackend: backend 'tensorflow' needs @tensorflow/tfjs-node (or @tensorflow/tfjs-node-gpu) and neither is installed. " +
          'Install one with `npm install @tensorflow/tfjs-node@4.22.0` (its install script downloads libtensorflow, ' +
          "so it needs internet access), or use backend 'wasm'.",
      );
    }
    if (loaded !== null) tensorflowPackage = loaded;
  }
  if (tensorflowPackage !== undefined) backend = 'tensorflow';
  else if (requested === 'cpu') backend = 'cpu';
  else backend = 'wasm';

  if (!(await tf.setBackend(backend))) {
    throw new ConfigError(`initBackend: backend '${backend}' failed to initialise`);
  }
  await tf.ready();

  let fixes: readonly string[] = [];
  if (kernelFixes) {
    fixes = registerKernelFixes(backend);
  } else {
    unregisterKernelFixes(backend);
  }
  let acceleration: AccelerationStatus;
  if (backend !== 'wasm') {
    acceleration = deactivateAcceleration(`only the wasm backend uses native acceleration (this is '${backend}')`);
  } else if (!kernelFixes) {
    acceleration = deactivateAcceleration('kernel fixes are off (stock tfjs kernels)');
  } else {
    acceleration = configureAcceleration({
      enabled: options.acceleration ?? true,
      ...(options.blasThreads !== undefined ? { threads: options.blasThreads } : {}),
    });
  }
  const summary =
    `tfjs ${tf.version_core} on '${backend}'` +
    (tensorflowPackage ? ` (${tensorflowPackage})` : '') +
    (fixes.length > 0 ? `, kernel fixes: ${fixes.join(', ')}` : ', no kernel fixes') +
    (acceleration.active
      ? `; native acceleration: ${acceleration.reason}${acceleration.library ? ` (${acceleration.library})` : ''}`
      : `; native acceleration off: ${acceleration.reason}`);
  return {
    requested,
    backend,
    ...(tensorflowPackage ? { tensorflowPackage } : {}),
    kernelFixes: fixes,
    acceleration,
    summary,
  };
}
