/**
 * The vocabulary that routers and experts share. It lives here, at the base of the dependency graph,
 * so that `@moepp/routers` and `@moepp/experts` agree without importing each other.
 */

/**
 * The kind of an expert. `ffn` experts do the real compute; the other three are MoE++'s
 * zero-computation experts (arXiv 2410.07348, §3.1): `zero` discards (`E(x) = 0`), `copy` skips
 * (`E(x) = x`), `constant` replaces (`E(x) = a1·x + a2·v`).
 */
export type ExpertKind = 'ffn' | 'zero' | 'copy' | 'constant';

/** All expert kinds, in the order the official MoE++ code lays out a layer's experts. */
export const EXPERT_KINDS: readonly ExpertKind[] = ['ffn', 'constant', 'copy', 'zero'];

/**
 * @param kind - an expert kind
 * @returns true for the zero-computation kinds (`zero`, `copy`, `constant`)
 */
export function isZeroComputation(kind: ExpertKind): boolean {
  return kind !== 'ffn';
}
