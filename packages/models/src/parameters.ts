/**
 * Named parameters. Every trainable tensor of a model is registered under its official MoE++ /
 * Hugging Face name (`model.layers.0.self_attn.q_proj.weight`), so that checkpoints, freezing and
 * optimiser state all speak one vocabulary.
 */
import type * as tf from '@tensorflow/tfjs';

/** One trainable tensor of a model. */
export interface NamedParameter {
  /** The official Hugging Face name, e.g. `model.layers.0.mlp.moe.gate.wg.weight`. */
  readonly name: string;
  /** The variable the kit trains (tfjs layout: a linear map is `[in, out]`). */
  readonly variable: tf.Variable;
  /**
   * True when the PyTorch tensor is the transpose of `variable` (every `nn.Linear` weight: PyTorch
   * stores `[out, in]`). Export transposes these; import transposes them back.
   */
  readonly transposed: boolean;
}

/**
 * Builds a {@link NamedParameter} list under a name prefix.
 *
 * @param prefix - prepended with a dot, e.g. `model.layers.3.self_attn`
 * @param entries - `[localName, variable, transposed]` triples
 * @returns the named parameters
 */
export function namedParameters(
  prefix: string,
  entries: readonly (readonly [string, tf.Variable, boolean])[],
): NamedParameter[] {
  return entries.map(([local, variable, transposed]) => ({
    name: prefix ? `${prefix}.${local}` : local,
    variable,
    transposed,
  }));
}
