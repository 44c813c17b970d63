/**
 * The grouped expert FFN: every SwiGLU FFN expert of an MoE layer on its own block of token rows, as
 * one op. A layer that runs its experts one by one launches a gather, two matmuls, a SwiGLU and a
 * gate multiply per expert, forward and backward (hundreds of kernel launches per step with 8–16
 * experts); with native acceleration this op is one kernel forward and one backward, whatever the
 * number of experts (the grouped GEMM of MegaBlocks, on OpenBLAS).
 *
 * The fused kernels (`kernels/grouped-ffn.ts`) run on the `wasm` backend while native acceleration is
 * active. Otherwise (cpu, tfjs-node, wasm without OpenBLAS, `MOEPP_ACCEL=off`) the op is its composite
 * form, `split` / per group `matMul`, {@link swiglu}, `matMul` / `concat`, with tfjs's own gradients.
 * Both give the same values to float32 rounding.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, ConfigError } from './errors.js';
import { fusedOpsActive, swiglu } from './fused.js';
import { GROUPED_FFN_KERNELS, groupedWeightInput, registerGroupedFfnKernels } from './kernels/grouped-ffn.js';

registerGroupedFfnKernels();

const OP = 'groupedSwigluFfn';

/** The kernels' inputs besides `rows` / `dy`: `upWeight0..G-1`, `downWeight0..G-1`. */
function weightInputs(upWeights: readonly tf.Tensor[], downWeights: readonly tf.Tensor[]): tf.NamedTensorMap {
  const inputs: tf.NamedTensorMap = {};
  upWeights.forEach((weight, g) => (inputs[groupedWeightInput.up(g)] = weight));
  downWeights.forEach((weight, g) => (inputs[groupedWeightInput.down(g)] = weight));
  return inputs;
}

/**
 * The composite form: split the rows by group, `swiglu(rows_g·up_g)·down_g` per group, concat.
 *
 * @param rows - `[M, D]`
 * @param groupSizes - G row counts summing to M
 * @param upWeights - G × `[D, 2F]`
 * @param downWeights - G × `[F, D]`
 * @returns `[M, D]`
 */
function groupedComposite(rows: tf.Tensor2D, groupSizes: readonly number[], upWeights: readonly tf.Tensor[], downWeights: readonly tf.Tensor[]): tf.Tensor2D {
  return tf.tidy(() => {
    const blocks = groupSizes.length === 1 ? [rows] : tf.split(rows, [...groupSizes], 0); // G × [n_g, D]
    const outputs = blocks.map((block, g) => {
      const up = tf.matMul(block, upWeights[g] as tf.Tensor2D); // [n_g, 2F]
      return tf.matMul(swiglu(up) as tf.Tensor2D, downWeights[g] as tf.Tensor2D); // [n_g, D]
    });
    return (outputs.length === 1 ? outputs[0] : tf.concat(outputs, 0)) as tf.Tensor2D; // [M, D]
  });
}

/**
 * The gradients of the fused forward pass in composite form, for a backward pass that runs without
 * acceleration (say, acceleration suspended between forward and backward).
 *
 * @param dy - `[M, D]`
 * @param rows - `[M, D]`
 * @param up - `[M, 2F]`, the saved pre-activation
 * @param hidden - `[M, F]`, the saved `swiglu(up)`
 * @param groupSizes - G row counts
 * @param upWeights - G × `[D, 2F]`
 * @param downWeights - G × `[F, D]`
 * @returns `[dRows [M, D], ...G × dUpWeight [D, 2F], ...G × dDownWeight [F, D]]`
 */
function groupedGradientComposite(
  dy: tf.Tensor,
  rows: tf.Tensor,
  up: tf.Tensor,
  hidden: tf.Tensor,
  groupSizes: readonly number[],
  upWeights: readonly tf.Tensor[],
  downWeights: readonly tf.Tensor[],
): tf.Tensor[] {
  return tf.tidy(() => {
    const split = (t: tf.Tensor): tf.Tensor[] => (groupSizes.length === 1 ? [t] : tf.split(t, [...groupSizes], 0));
    const dyBlocks = split(dy); // G × [n_g, D]
    const dHidden = tf.concat(dyBlocks.map((block, g) => tf.matMul(block, downWeights[g] as tf.Tensor, false, true)), 0); // [M, F]
    const [gate, value] = tf.split(up, 2, -1) as [tf.Tensor, tf.Tensor]; // a, b: [M, F]
    const s = tf.sigmoid(gate);
    const dGate = tf.mul(tf.mul(tf.mul(dHidden, value), s), tf.add(1, tf.mul(gate, tf.sub(1, s)))); // [M, F]
    const dValue = tf.mul(dHidden, tf.mul(gate, s)); // [M, F]
    const dUpBlocks = split(tf.concat([dGate, dValue], -1)); // G × [n_g, 2F]
    const rowBlocks = split(rows); // G × [n_g, D]
    const hiddenBlocks = split(hidden); // G × [n_g, F]
    const dRows = tf.concat(dUpBlocks.map((block, g) => tf.matMul(block, upWeights[g] as tf.Tensor, false, true)), 0); // [M, D]
    const dUpWeights = groupSizes.map((n, g) =>
      n === 0 ? tf.zeros((upWeights[g] as tf.Tensor).shape) : tf.matMul(rowBlocks[g] as tf.Tensor, dUpBlocks[g] as tf.Tensor, true, false),
    ); // G × [D, 2F]
    const dDownWeights = groupSizes.map((n, g) =>
      n === 0 ? tf.zeros((downWeights[g] as tf.Tensor).shape) : tf.matMul(hiddenBlocks[g] as tf.Tensor, dyBlocks[g] as tf.Tensor, true, false),
    ); // G × [F, D]
    return [dRows, ...dUpWeights, ...dDownWeights];
  });
}

/**
 * The fused op with its gradient. Saves the pre-activation `up` `[M, 2F]` and `hidden` `[M, F]`: the
 * forward kernel makes both anyway, so keeping them costs `3·M·F` floats (no more than the composite
 * form keeps under autodiff), while recomputing `up` in the backward pass would add a `4·M·D·F`-FLOP
 * product to every step (22% of the step's `18·M·D·F`).
 */
function groupedFused(rows: tf.Tensor2D, groupSizes: readonly number[], upWeights: readonly tf.Tensor[], downWeights: readonly tf.Tensor[]): tf.Tensor2D {
  const groupCount = groupSizes.length;
  const attrs = { groupSizes: [...groupSizes] };
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const input = args[0] as tf.Tensor2D; // [M, D]
    const ups = args.slice(1, 1 + groupCount) as tf.Tensor[]; // G × [D, 2F]
    const downs = args.slice(1 + groupCount, 1 + 2 * groupCount) as tf.Tensor[]; // G × [F, D]
    const [y, up, hidden] = tf.engine().runKernel(
      GROUPED_FFN_KERNELS.forward,
      { rows: input, ...weightInputs(ups, downs) } as unknown as tf.NamedTensorMap,
      attrs as unknown as tf.NamedAttrMap,
    ) as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D]; // [M, D], [M, 2F], [M, F]
    save([input, up, hidden, ...ups, ...downs]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [savedRows, savedUp, savedHidden] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        const savedUps = saved.slice(3, 3 + groupCount);
        const savedDowns = saved.slice(3 + groupCount);
        if (!(fusedOpsActive() && dy.dtype === 'float32')) {
          return groupedGradientComposite(dy, savedRows, savedUp, savedHidden, groupSizes, savedUps, savedDowns);
        }
        return tf.engine().runKernel(
          GROUPED_FFN_KERNELS.backward,
          { dy, rows: savedRows, up: savedUp, hidden: savedHidden, ...weightInputs(savedUps, savedDowns) } as unknown as tf.NamedTensorMap,
          attrs as unknown as tf.NamedAttrMap,
        ) as tf.Tensor[]; // [dRows [M, D], ...G × [D, 2F], ...G × [F, D]]
      },
    };
  });
  return op(rows, ...upWeights, ...downWeights) as tf.Tensor2D;
}

/**
 * Runs G SwiGLU FFN experts, each on its own block of rows, in one op: row block `g` (the
 * `groupSizes[g]` rows after the blocks of groups `0..g-1`) becomes `swiglu(rows_g·up_g)·down_g`,
 * where `swiglu(u) = silu(a)·b` for the halves `[a, b]` of `u`'s last axis (see {@link swiglu}; the
 * official MoE++ `MLPMoE` expert with `up_proj: D -> 2F`, `down_proj: F -> D`).
 *
 * Gradients flow to `rows` and to every weight (a `tf.Variable` is fine); an empty group's weights get
 * zero gradients. With native acceleration on the `wasm` backend, the forward pass is one kernel
 * (`MoeppGroupedSwiGLUFfn`: one OpenBLAS `sgemm` per group and projection, one SwiGLU over all rows) and
 * the backward pass another (`MoeppGroupedSwiGLUFfnGrad`); otherwise it is the composite form
 * (`split`, per group `matMul` / `swiglu` / `matMul`, `concat`) with tfjs's gradients.
 *
 * Shape legend: `G` groups (experts), `M = Σ groupSizes` rows, `D` model width, `F` hidden width.
 *
 * @param rows - `[M, D]` float32: group 0's rows first, then group 1's, …
 * @param groupSizes - `G >= 1` row counts, integers `>= 0` (an expert may get no rows), summing to `M`
 * @param upWeights - G × `[D, 2F]` float32, expert `g`'s fused up-projection (`FfnExpert`'s `upProj`)
 * @param downWeights - G × `[F, D]` float32, expert `g`'s down-projection (`FfnExpert`'s `downProj`)
 * @returns `[M, D]` float32, the experts' outputs in the order of `rows`
 * @throws {@link ConfigError} when `groupSizes` is empty, holds a negative or fractional count, or does
 *   not sum to `M`, or when `upWeights` or `downWeights` does not hold one tensor per group
 * @throws {@link ShapeError} when `rows` is not `[M, D]` float32, or a weight is not `[D, 2F]` / `[F, D]`
 *   float32 (with one `F` for all groups)
 * @see https://arxiv.org/abs/2211.15841 (Gale et al., MegaBlocks: grouped expert computation)
 * @see https://arxiv.org/abs/2002.05202 (Shazeer, GLU Variants Improve Transformer)
 */
export function groupedSwigluFfn(
  rows: tf.Tensor2D,
  groupSizes: readonly number[],
  upWeights: readonly tf.Tensor[],
  downWeights: readonly tf.Tensor[],
): tf.Tensor2D {
  const bindings = checkShape(OP, 'rows', rows, ['M', 'D'], 'float32');
  const m = bindings.get('M') as number;
  const d = bindings.get('D') as number;
  if (!Array.isArray(groupSizes) || groupSizes.length === 0) {
    throw new ConfigError(`${OP}: 'groupSizes' must be a non-empty array of row counts (one per group), got ${Array.isArray(groupSizes) ? '[]' : String(groupSizes)}`);
  }
  const groupCount = groupSizes.length;
  let total = 0;
  groupSizes.forEach((n, g) => {
    total += checkNumber(OP, `groupSizes[${g}]`, n, { integer: true, min: 0 });
  });
  if (total !== m) {
    throw new ConfigError(`${OP}: 'groupSizes' must sum to M = ${m} (the rows of 'rows' [${rows.shape.join(', ')}]), got [${groupSizes.join(', ')}] summing to ${total}`);
  }
  for (const [name, weights] of [['upWeights', upWeights], ['downWeights', downWeights]] as const) {
    if (!Array.isArray(weights) || weights.length !== groupCount) {
      throw new ConfigError(`${OP}: '${name}' must hold ${groupCount} tensors (one per group of 'groupSizes'), got ${Array.isArray(weights) ? weights.length : String(weights)}`);
    }
  }
  const f = checkShape(OP, 'downWeights[0]', downWeights[0] as tf.Tensor, ['F', d], 'float32').get('F') as number;
  for (let g = 0; g < groupCount; g++) {
    checkShape(OP, `upWeights[${g}]`, upWeights[g] as tf.Tensor, [d, 2 * f], 'float32');
    checkShape(OP, `downWeights[${g}]`, downWeights[g] as tf.Tensor, [f, d], 'float32');
  }
  return fusedOpsActive() && m > 0 && d > 0 && f > 0
    ? groupedFused(rows, groupSizes, upWeights, downWeights)
    : groupedComposite(rows, groupSizes, upWeights, downWeights);
}
