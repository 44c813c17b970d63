/**
 * Test-only helpers (excluded from the build by tsconfig.build.json).
 *
 * `checkVariableGradients` is the variable counterpart of `checkGradients` from
 * `@moepp/tensors-core/testing`: components keep their weights in `tf.Variable`s and read them inside
 * their forward pass, so the check perturbs the variables in place (`assign`) instead of passing
 * shifted inputs. Candidate for `@moepp/tensors-core/testing` once a third package needs it.
 */
import * as tf from '@tensorflow/tfjs';
import type { GradientCheckOptions } from '@moepp/tensors-core/testing';

/**
 * Compares `tf.variableGrads` of a scalar function with central finite differences
 * `(f(v + eps·e_i) - f(v - eps·e_i)) / (2·eps)` for sampled elements of each variable.
 *
 * @param f - a scalar function of the variables (called many times; must be deterministic)
 * @param variables - the variables to check; restored to their values afterwards
 * @param options - step (default 1e-2), tolerances (atol 1e-3, rtol 2e-2), elements per variable (24)
 * @throws Error naming the variable, the element, the analytic and the numeric value
 */
export function checkVariableGradients(
  f: () => tf.Scalar,
  variables: readonly tf.Variable[],
  options: GradientCheckOptions = {},
): void {
  const epsilon = options.epsilon ?? 1e-2;
  const atol = options.atol ?? 1e-3;
  const rtol = options.rtol ?? 2e-2;
  const maxElements = options.maxElements ?? 24;
  const analytic = tf.tidy(() => {
    const { grads } = tf.variableGrads(f, [...variables]);
    return variables.map((v) => {
      const g = grads[v.name];
      if (g === undefined) throw new Error(`checkVariableGradients: no gradient for variable ${v.name}`);
      return g.dataSync().slice();
    });
  });
  const evaluate = (): number => tf.tidy(() => f().dataSync()[0] as number);
  variables.forEach((variable, which) => {
    const original = Float32Array.from(variable.dataSync());
    const setElement = (flat: number, value: number): void => {
      const copy = Float32Array.from(original);
      copy[flat] = value;
      tf.tidy(() => variable.assign(tf.tensor(copy, variable.shape, 'float32')));
    };
    try {
      const stride = Math.max(1, Math.floor(variable.size / maxElements));
      for (let flat = 0; flat < variable.size; flat += stride) {
        const base = original[flat] as number;
        setElement(flat, base + epsilon);
        const plus = evaluate();
        setElement(flat, base - epsilon);
        const minus = evaluate();
        const numeric = (plus - minus) / (2 * epsilon);
        const exact = (analytic[which] as Float32Array)[flat] as number;
        if (!(Math.abs(exact - numeric) <= atol + rtol * Math.abs(numeric))) {
          throw new Error(
            `checkVariableGradients: variable ${which} (${variable.name}) element ${flat}: analytic ${exact}, finite difference ${numeric}`,
          );
        }
      }
    } finally {
      tf.tidy(() => variable.assign(tf.tensor(original, variable.shape, 'float32')));
    }
  });
}

/**
 * Sets a variable's value from a nested array.
 *
 * @param variable - the variable
 * @param values - values of the variable's shape
 */
export function setVariable(variable: tf.Variable, values: tf.TensorLike): void {
  tf.tidy(() => variable.assign(tf.tensor(values, variable.shape, 'float32')));
}
