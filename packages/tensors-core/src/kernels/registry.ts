/**
 * Bookkeeping shared by the kernel fixes: installing a kit kernel or gradient in tfjs's global
 * registry while keeping a reference to the stock one, and putting the stock one back.
 *
 * The state lives in tfjs's own registry, not in this module: every config the kit registers carries
 * a marker with the fix's name, and the stock configs it replaced are kept in a map stored on
 * `globalThis`. So two copies of this package loaded in one process (say, a bundled and an unbundled
 * one) agree on what is installed and never wrap each other's kernels.
 */
import * as tf from '@tensorflow/tfjs';

/** Marks a kernel or gradient config registered by the kit; the value is the fix's name. */
const FIX_MARK = Symbol.for('@moepp/tensors-core/kernel-fix');

interface StockStore {
  /** `${backend}_${kernelName}` -> the stock kernel config (`null`: tfjs registered none). */
  readonly kernels: Map<string, tf.KernelConfig | null>;
  /** kernelName -> the stock gradient config (`null`: tfjs registered none). */
  readonly gradients: Map<string, tf.GradConfig | null>;
}

const STORE_KEY = Symbol.for('@moepp/tensors-core/stock-kernels');

function store(): StockStore {
  const holder = globalThis as unknown as Record<symbol, StockStore | undefined>;
  let existing = holder[STORE_KEY];
  if (existing === undefined) {
    existing = { kernels: new Map(), gradients: new Map() };
    holder[STORE_KEY] = existing;
  }
  return existing;
}

function keyOf(kernelName: string, backendName: string): string {
  return `${backendName}_${kernelName}`;
}

function markOf(config: object | undefined): string | undefined {
  return config === undefined ? undefined : (config as Record<symbol, string | undefined>)[FIX_MARK];
}

/**
 * The kernel currently registered for a kernel name and backend (tfjs's `getKernel` is typed as
 * always returning one).
 *
 * @param kernelName - a tfjs kernel name, e.g. `'BatchMatMul'`
 * @param backendName - a backend name, e.g. `'wasm'`
 * @returns the registered config, or `undefined` when there is none
 */
export function registeredKernel(kernelName: string, backendName: string): tf.KernelConfig | undefined {
  return tf.getKernel(kernelName, backendName) as tf.KernelConfig | undefined;
}

/**
 * @param kernelName - a tfjs kernel name, e.g. `'BatchMatMul'`
 * @param backendName - a backend name, e.g. `'wasm'`
 * @returns the name of the kit fix registered for that kernel, or `undefined` when it is tfjs's own
 */
export function installedKernelFix(kernelName: string, backendName: string): string | undefined {
  return markOf(registeredKernel(kernelName, backendName));
}

/**
 * @param kernelName - a tfjs kernel name, e.g. `'TopK'`
 * @returns the name of the kit fix registered as that kernel's gradient, or `undefined`
 */
export function installedGradientFix(kernelName: string): string | undefined {
  return markOf(tf.getGradient(kernelName) as tf.GradConfig | undefined);
}

/**
 * The stock kernel a fix replaced (or, when no fix is installed, the one registered now).
 *
 * @param kernelName - a tfjs kernel name
 * @param backendName - a backend name
 * @returns the stock config, or `undefined` when tfjs has none for that backend
 */
export function stockKernel(kernelName: string, backendName: string): tf.KernelConfig | undefined {
  const key = keyOf(kernelName, backendName);
  const current = registeredKernel(kernelName, backendName);
  if (markOf(current) === undefined) return current;
  return store().kernels.get(key) ?? undefined;
}

/**
 * Like {@link stockKernel}, for kernel functions that cannot work without it.
 *
 * @param kernelName - a tfjs kernel name
 * @param backendName - a backend name
 * @returns the stock config
 * @throws Error naming the kernel and backend when tfjs has no stock kernel for them
 */
export function requireStockKernel(kernelName: string, backendName: string): tf.KernelConfig {
  const config = stockKernel(kernelName, backendName);
  if (config === undefined) {
    throw new Error(`kernel fix: no stock '${kernelName}' kernel registered for backend '${backendName}'`);
  }
  return config;
}

/**
 * Registers a kit kernel in place of the stock one, keeping the stock config (its `setupFunc` and
 * `disposeFunc` stay attached, so a re-initialised backend still sets the stock kernel up).
 * Does nothing if this fix is already installed.
 *
 * @param fixName - the fix's name, recorded as a marker on the registered config
 * @param kernelName - the tfjs kernel name
 * @param backendName - the backend
 * @param kernelFunc - the kit's kernel function
 * @returns true if it registered something, false if the fix was already installed
 */
export function installKernel(fixName: string, kernelName: string, backendName: string, kernelFunc: tf.KernelFunc): boolean {
  const current = registeredKernel(kernelName, backendName);
  const currentMark = markOf(current);
  if (currentMark === fixName) return false;
  const key = keyOf(kernelName, backendName);
  if (currentMark === undefined) store().kernels.set(key, current ?? null);
  const stock = store().kernels.get(key) ?? undefined;
  if (current !== undefined) tf.unregisterKernel(kernelName, backendName);
  const config: tf.KernelConfig = {
    ...(stock?.setupFunc ? { setupFunc: stock.setupFunc } : {}),
    ...(stock?.disposeFunc ? { disposeFunc: stock.disposeFunc } : {}),
    kernelName,
    backendName,
    kernelFunc,
  };
  (config as unknown as Record<symbol, string>)[FIX_MARK] = fixName;
  tf.registerKernel(config);
  return true;
}

/**
 * Puts the stock kernel back (or leaves the kernel unregistered if tfjs had none).
 *
 * @param kernelName - the tfjs kernel name
 * @param backendName - the backend
 * @returns true if a kit kernel was removed
 */
export function uninstallKernel(kernelName: string, backendName: string): boolean {
  const current = registeredKernel(kernelName, backendName);
  if (markOf(current) === undefined) return false;
  tf.unregisterKernel(kernelName, backendName);
  const stock = store().kernels.get(keyOf(kernelName, backendName));
  if (stock) tf.registerKernel(stock);
  return true;
}

/**
 * Registers a kit gradient, keeping any stock gradient for the kernel. Gradients are global in
 * tfjs (one per kernel name, for every backend).
 *
 * @param fixName - the fix's name
 * @param config - the gradient config
 * @returns true if it registered something, false if the fix was already installed
 */
export function installGradient(fixName: string, config: tf.GradConfig): boolean {
  const current = tf.getGradient(config.kernelName) as tf.GradConfig | undefined;
  const currentMark = markOf(current);
  if (currentMark === fixName) return false;
  if (currentMark === undefined) store().gradients.set(config.kernelName, current ?? null);
  const marked: tf.GradConfig = { ...config };
  (marked as unknown as Record<symbol, string>)[FIX_MARK] = fixName;
  tf.registerGradient(marked);
  return true;
}

/**
 * Puts the stock gradient back (or removes the gradient if tfjs had none).
 *
 * @param kernelName - the tfjs kernel name
 * @returns true if a kit gradient was removed
 */
export function uninstallGradient(kernelName: string): boolean {
  const current = tf.getGradient(kernelName) as tf.GradConfig | undefined;
  if (markOf(current) === undefined) return false;
  tf.unregisterGradient(kernelName);
  const stock = store().gradients.get(kernelName);
  if (stock) tf.registerGradient(stock);
  return true;
}
