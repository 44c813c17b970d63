/**
 * Backend selection. `initBackend` picks a tfjs backend, registers the kit's kernel fixes for it and
 * reports what is active.
 *
 * | backend | what it is | note |
 * |---|---|---|
 * | `wasm` | `@tensorflow/tfjs-backend-wasm`, SIMD, one thread | the fastest backend that installs everywhere; the fixes make it ~15× faster on MoE training |
 * | `cpu` | pure JavaScript | slow but simple; the reference for tests |
 * | `tensorflow` | `@tensorflow/tfjs-node` or `-node-gpu` (libtensorflow) | optional: used only when the user installed one |
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { checkOneOf, ConfigError } from './errors.js';
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
 *   `@tensorflow/tfjs-node` nor `@tensorflow/tfjs-node-gpu` is installed (the message says how to install one)
 */
export async function initBackend(options: BackendOptions = {}): Promise<BackendReport> {
  const requested = checkOneOf('initBackend', 'backend', options.backend ?? 'auto', BACKEND_CHOICES);
  const kernelFixes = options.kernelFixes ?? true;
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
  const summary =
    `tfjs ${tf.version_core} on '${backend}'` +
    (tensorflowPackage ? ` (${tensorflowPackage})` : '') +
    (fixes.length > 0 ? `, kernel fixes: ${fixes.join(', ')}` : ', no kernel fixes');
  return { requested, backend, ...(tensorflowPackage ? { tensorflowPackage } : {}), kernelFixes: fixes, summary };
}
