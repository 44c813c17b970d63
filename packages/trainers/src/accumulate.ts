/**
 * Gradient accumulation: run several micro-batches, sum their gradients, and step the optimiser once
 * with the mean. With `A` micro-batches of `B` windows each, one optimiser step sees `A·B` windows while
 * memory holds the activations of only `B`. Each micro-batch's loss is a mean over its own tokens, so the
 * mean of the `A` gradients equals the gradient of the mean loss over all `A·B` windows (for equal
 * token counts; the aux losses are per micro-batch, as in every accumulating trainer).
 */
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '@moepp/tensors-core';

/**
 * Sums gradients by name across micro-batches. Holds one running-sum tensor per name.
 */
export class GradientAccumulator {
  private readonly sums = new Map<string, tf.Tensor>();
  private added = 0;

  /** @returns how many micro-batches have been added since the last {@link GradientAccumulator.takeMean} */
  get count(): number {
    return this.added;
  }

  /**
   * Adds one micro-batch's gradients. Takes ownership: the given tensors are disposed (or kept as the sum).
   *
   * @param gradients - gradients by name; a name missing from a micro-batch counts as zero there
   * @throws `ConfigError` when a gradient's shape differs from earlier ones under the same name
   *   (the given tensors are disposed in that case too)
   */
  add(gradients: ReadonlyMap<string, tf.Tensor>): void {
    try {
      for (const [name, gradient] of gradients) {
        const sum = this.sums.get(name);
        if (sum && (sum.shape.length !== gradient.shape.length || sum.shape.some((d, i) => d !== gradient.shape[i]))) {
          throw new ConfigError(
            `GradientAccumulator.add: gradient '${name}' has shape [${gradient.shape.join(', ')}], earlier [${sum.shape.join(', ')}]`,
          );
        }
      }
    } catch (error) {
      tf.dispose([...gradients.values()]);
      throw error;
    }
    for (const [name, gradient] of gradients) {
      const sum = this.sums.get(name);
      if (sum === undefined) {
        this.sums.set(name, gradient);
      } else {
        this.sums.set(name, tf.add(sum, gradient));
        tf.dispose([sum, gradient]);
      }
    }
    this.added += 1;
  }

  /**
   * @returns the mean gradient per name (sum / number of micro-batches added); new tensors owned by the
   *   caller. The accumulator is empty afterwards.
   * @throws `ConfigError` when nothing was added
   */
  takeMean(): Map<string, tf.Tensor> {
    if (this.added === 0) throw new ConfigError('GradientAccumulator.takeMean: no micro-batch was added');
    const mean = new Map<string, tf.Tensor>();
    for (const [name, sum] of this.sums) {
      if (this.added === 1) {
        mean.set(name, sum);
      } else {
        mean.set(name, tf.div(sum, this.added));
        sum.dispose();
      }
    }
    this.sums.clear();
    this.added = 0;
    return mean;
  }

  /** Frees any partial sums (after an error mid-step). */
  dispose(): void {
    tf.dispose([...this.sums.values()]);
    this.sums.clear();
    this.added = 0;
  }
}
