/**
 * wasm kernels of `groupedSwigluFfn` (`../grouped-ffn.ts`): every SwiGLU FFN expert of a layer on
 * its own block of rows, in one kernel forward and one backward. They loop over the groups in
 * TypeScript to list the products with row offsets into the `[M, ·]` buffers, hand each list to the
 * native addon's `sgemmList` (which runs the products in parallel, each whole on one thread), and its
 * `swiglu` / `swigluGrad` once over all `M` rows. Registered for `wasm` only and called only while
 * native acceleration is active; otherwise the op runs as composite tfjs ops.
 *
 * `G` groups, `M = Σ groupSizes` rows (group 0's rows first), `D` model width, `F` hidden width; the
 * group count and sizes travel in the attribute `groupSizes` (`number[]`, length `G`).
 *
 * | kernel | inputs | outputs |
 * |---|---|---|
 * | `MoeppGroupedSwiGLUFfn` | `rows` `[M, D]`, `upWeight0..G-1` `[D, 2F]`, `downWeight0..G-1` `[F, D]` | `y` `[M, D]`, `up` `[M, 2F]` (pre-activation), `hidden` `[M, F]` |
 * | `MoeppGroupedSwiGLUFfnGrad` | `dy` `[M, D]`, `rows`, `up`, `hidden`, `upWeight0..`, `downWeight0..` | `dRows` `[M, D]`, `dUpWeight0..G-1` `[D, 2F]`, `dDownWeight0..G-1` `[F, D]` |
 *
 * For group `g` with rows `r..r+n` (`n = groupSizes[g]`): `up[r..r+n] = rows[r..r+n]·upWeight_g`,
 * `hidden = swiglu(up)`, `y[r..r+n] = hidden[r..r+n]·downWeight_g`; backward, `dHidden = dy·downWeight_gᵀ`,
 * `dUp = swigluGrad(dHidden, up)`, `dDownWeight_g = hidden_gᵀ·dy_g`, `dUpWeight_g = rows_gᵀ·dUp_g`,
 * `dRows_g = dUp_g·upWeight_gᵀ`. An empty group writes zeros into its weight gradients (`sgemm` with
 * `k = 0` and `beta = 0`).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { floatOffset, requireAccel, runProducts } from './heap.js';
import { registerWasmKernels, requireInput, withOutputs, type NativeKernelArgs } from './native-kernel.js';

/** Element offset of a float32 tensor in the wasm heap (see `floatOffset`). */
const offsetOf = (backend: BackendWasm, info: TensorInfo): number => floatOffset(backend, info, 'grouped FFN kernel');

type TensorInfo = tf.TensorInfo;

/** Kernel names of the grouped expert FFN. */
export const GROUPED_FFN_KERNELS = {
  forward: 'MoeppGroupedSwiGLUFfn',
  backward: 'MoeppGroupedSwiGLUFfnGrad',
} as const;

/** The input names of group `g`'s weights in both kernels. */
export const groupedWeightInput = {
  up: (g: number): string => `upWeight${g}`,
  down: (g: number): string => `downWeight${g}`,
} as const;

/** The sizes both kernels read from their inputs and attributes. */
interface GroupedPlan {
  /** Rows per group; length G. */
  readonly groupSizes: readonly number[];
  /** First row of each group; length G. */
  readonly starts: readonly number[];
  /** Σ groupSizes. */
  readonly m: number;
  readonly d: number;
  readonly f: number;
  /** G × `[D, 2F]`. */
  readonly upWeights: readonly TensorInfo[];
  /** G × `[F, D]`. */
  readonly downWeights: readonly TensorInfo[];
}

/** Reads `groupSizes` and the weights, and checks that every shape agrees with `rows` `[M, D]`. */
function planGroups(kernelName: string, args: NativeKernelArgs, rows: TensorInfo | undefined): GroupedPlan {
  if (rows === undefined || rows.shape.length !== 2) throw new Error(`${kernelName}: 'rows' must be [M, D]`);
  const groupSizes = args.attrs?.groupSizes;
  if (!Array.isArray(groupSizes) || groupSizes.length === 0 || !groupSizes.every((n) => Number.isInteger(n) && (n as number) >= 0)) {
    throw new Error(`${kernelName}: attribute 'groupSizes' must be a non-empty list of row counts >= 0`);
  }
  const sizes = groupSizes as number[];
  const [m, d] = rows.shape as [number, number];
  const starts: number[] = [];
  let total = 0;
  for (const size of sizes) {
    starts.push(total);
    total += size;
  }
  if (total !== m) throw new Error(`${kernelName}: groupSizes sum to ${total}, 'rows' has ${m} rows`);
  const firstDown = args.inputs[groupedWeightInput.down(0)];
  if (firstDown === undefined || firstDown.shape.length !== 2) throw new Error(`${kernelName}: '${groupedWeightInput.down(0)}' must be [F, D]`);
  const f = firstDown.shape[0] as number;
  const upWeights = sizes.map((_, g) => requireInput(kernelName, args.inputs, groupedWeightInput.up(g), [d, 2 * f]));
  const downWeights = sizes.map((_, g) => requireInput(kernelName, args.inputs, groupedWeightInput.down(g), [f, d]));
  return { groupSizes: sizes, starts, m, d, f, upWeights, downWeights };
}

function groupedForwardKernel(args: NativeKernelArgs): TensorInfo[] {
  const kernelName = GROUPED_FFN_KERNELS.forward;
  const accel = requireAccel(kernelName);
  const backend = args.backend as BackendWasm;
  const rows = args.inputs.rows;
  const plan = planGroups(kernelName, args, rows);
  const { groupSizes, starts, m, d, f } = plan;
  requireInput(kernelName, args.inputs, 'rows', [m, d]);
  const rowsOffset = offsetOf(backend, rows as TensorInfo);
  const upWeightOffsets = plan.upWeights.map((info) => offsetOf(backend, info));
  const downWeightOffsets = plan.downWeights.map((info) => offsetOf(backend, info));
  const shapes = [
    [m, d], // y
    [m, 2 * f], // up (pre-activation)
    [m, f], // hidden = swiglu(up)
  ];
  return withOutputs(backend, shapes, (heap, outputs) => {
    const [y, up, hidden] = outputs as [TensorInfo, TensorInfo, TensorInfo];
    const yOffset = offsetOf(backend, y);
    const upOffset = offsetOf(backend, up);
    const hiddenOffset = offsetOf(backend, hidden);
    // up_g [n, 2F] = rows_g [n, D] · upWeight_g [D, 2F]
    runProducts(
      accel,
      heap,
      groupSizes.map((n, g) => {
        const start = starts[g] as number;
        return { transposeA: false, transposeB: false, m: n, n: 2 * f, k: d, aOffset: rowsOffset + start * d, lda: d, bOffset: upWeightOffsets[g] as number, ldb: 2 * f, cOffset: upOffset + start * 2 * f, ldc: 2 * f };
      }),
    );
    accel.swiglu(heap, upOffset, hiddenOffset, m, f); // hidden [M, F], all groups at once
    // y_g [n, D] = hidden_g [n, F] · downWeight_g [F, D]
    runProducts(
      accel,
      heap,
      groupSizes.map((n, g) => {
        const start = starts[g] as number;
        return { transposeA: false, transposeB: false, m: n, n: d, k: f, aOffset: hiddenOffset + start * f, lda: f, bOffset: downWeightOffsets[g] as number, ldb: d, cOffset: yOffset + start * d, ldc: d };
      }),
    );
  });
}

function groupedBackwardKernel(args: NativeKernelArgs): TensorInfo[] {
  const kernelName = GROUPED_FFN_KERNELS.backward;
  const accel = requireAccel(kernelName);
  const backend = args.backend as BackendWasm;
  const plan = planGroups(kernelName, args, args.inputs.rows);
  const { groupSizes, starts, m, d, f } = plan;
  const groupCount = groupSizes.length;
  const dy = requireInput(kernelName, args.inputs, 'dy', [m, d]);
  const rows = requireInput(kernelName, args.inputs, 'rows', [m, d]);
  const up = requireInput(kernelName, args.inputs, 'up', [m, 2 * f]);
  const hidden = requireInput(kernelName, args.inputs, 'hidden', [m, f]);
  const dyOffset = offsetOf(backend, dy);
  const rowsOffset = offsetOf(backend, rows);
  const upOffset = offsetOf(backend, up);
  const hiddenOffset = offsetOf(backend, hidden);
  const upWeightOffsets = plan.upWeights.map((info) => offsetOf(backend, info));
  const downWeightOffsets = plan.downWeights.map((info) => offsetOf(backend, info));
  const shapes = [
    [m, d], // dRows
    ...groupSizes.map(() => [d, 2 * f]), // dUpWeight_g
    ...groupSizes.map(() => [f, d]), // dDownWeight_g
  ];
  const scratchShapes = [
    [m, f], // dHidden
    [m, 2 * f], // dUp
  ];
  return withOutputs(backend, shapes, (heap, outputs, scratch) => {
    const [dHidden, dUp] = scratch as [TensorInfo, TensorInfo];
    const dRowsOffset = offsetOf(backend, outputs[0] as TensorInfo);
    const dUpWeightOffsets = outputs.slice(1, 1 + groupCount).map((info) => offsetOf(backend, info));
    const dDownWeightOffsets = outputs.slice(1 + groupCount).map((info) => offsetOf(backend, info));
    const dHiddenOffset = offsetOf(backend, dHidden);
    const dUpOffset = offsetOf(backend, dUp);
    // dHidden_g [n, F] = dy_g [n, D] · downWeight_gᵀ ([F, D] read transposed)
    runProducts(
      accel,
      heap,
      groupSizes.map((n, g) => {
        const start = starts[g] as number;
        return { transposeA: false, transposeB: true, m: n, n: f, k: d, aOffset: dyOffset + start * d, lda: d, bOffset: downWeightOffsets[g] as number, ldb: d, cOffset: dHiddenOffset + start * f, ldc: f };
      }),
    );
    accel.swigluGrad(heap, dHiddenOffset, upOffset, dUpOffset, m, f); // dUp [M, 2F], all groups at once
    // k = n: an empty group gets zeros (the addon writes beta·C = 0 without touching A or B)
    runProducts(
      accel,
      heap,
      groupSizes.flatMap((n, g) => {
        const start = starts[g] as number;
        return [
          // dDownWeight_g [F, D] = hidden_gᵀ ([n, F] read transposed) · dy_g [n, D]
          { transposeA: true, transposeB: false, m: f, n: d, k: n, aOffset: hiddenOffset + start * f, lda: f, bOffset: dyOffset + start * d, ldb: d, cOffset: dDownWeightOffsets[g] as number, ldc: d },
          // dUpWeight_g [D, 2F] = rows_gᵀ ([n, D] read transposed) · dUp_g [n, 2F]
          { transposeA: true, transposeB: false, m: d, n: 2 * f, k: n, aOffset: rowsOffset + start * d, lda: d, bOffset: dUpOffset + start * 2 * f, ldb: 2 * f, cOffset: dUpWeightOffsets[g] as number, ldc: 2 * f },
          // dRows_g [n, D] = dUp_g [n, 2F] · upWeight_gᵀ ([D, 2F] read transposed)
          { transposeA: false, transposeB: true, m: n, n: d, k: 2 * f, aOffset: dUpOffset + start * 2 * f, lda: 2 * f, bOffset: upWeightOffsets[g] as number, ldb: 2 * f, cOffset: dRowsOffset + start * d, ldc: d },
        ];
      }),
    );
  }, scratchShapes);
}

const KERNELS: ReadonlyArray<[string, tf.KernelFunc]> = [
  [GROUPED_FFN_KERNELS.forward, groupedForwardKernel as unknown as tf.KernelFunc],
  [GROUPED_FFN_KERNELS.backward, groupedBackwardKernel as unknown as tf.KernelFunc],
];

/**
 * Registers the grouped FFN kernels for `wasm` (once per process; a second copy of this package finds
 * them registered and leaves them).
 */
export function registerGroupedFfnKernels(): void {
  registerWasmKernels(KERNELS);
}
