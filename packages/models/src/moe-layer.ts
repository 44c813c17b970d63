/**
 * The MoE / MoE++ feed-forward layer: a router and a pool of experts, with sparse dispatch.
 *
 *     route:     indices [N, K], gates [N, K], keep [N, K], logits [N, E]  <- router(x, previousLogits)
 *     plan:      per expert e, the (token, slot) pairs routed to it       <- planDispatch (indices read back, grouped on the host)
 *     FFN:       rows = x[tokens of every FFN expert, in expert order]    one gather  [M, D]
 *                y_e = FFN_e(rows_e) · gates                              all FFN experts in one grouped op (runFfnExperts)
 *                y_ffn = scatter-add of the M rows into [N, D]            one unsorted segment sum
 *     copy / constant (elementwise, per token: no gather, no scatter):
 *                y_zc = x ⊙ w + G·V                                       w [N, 1] = Σ copy gates + Σ_c g_c·a1_c,
 *                                                                         G [N, C] = g_c·a2_c, V [C, D] the constants v_c
 *                                                                         (copyConstantMix: one op, one native kernel each way)
 *     zero:      nothing at all
 *     output:    y = y_ffn + x ⊙ w + G·V                                   one AddN
 *
 * Compute scales with the tokens actually routed to FFN experts: that is the point of MoE++. The
 * copy and constant experts cost O(N·D) elementwise work whatever the routing (the constant experts'
 * `[a1, a2] = softmax(W_c x)` is computed for every token, one `[N, D]·[D, 2C]` product), which is less
 * than gathering and scattering their rows.
 */
import * as tf from '@tensorflow/tfjs';
import {
  checkNumber,
  checkShape,
  copyConstantMix,
  groupedSwigluFfn,
  planDispatch,
  SeededRandom,
  ConfigError,
  type DispatchPlan,
  type ExpertKind,
} from '@moepp/tensors-core';
import { createExpertPool, FfnExpert, type ConstantExpert, type Expert } from '@moepp/experts';
import { MoEPlusPlusRouter, type CapacityConfig, type Router, type RouterOutput } from '@moepp/routers';
import { totalExperts, type MoeSettings } from './config.js';
import type { NamedParameter } from './parameters.js';

/** Configuration of one {@link MoeLayer}: the model's MoE settings plus the layer's widths. */
export interface MoeLayerConfig extends MoeSettings {
  /** D. */
  readonly hiddenSize: number;
  /** F, the width of one FFN expert. */
  readonly intermediateSize: number;
  /** Std of the normal initialisation. Default 0.02. */
  readonly initializerRange?: number;
}

/** Options of {@link MoeLayer.forward}. */
export interface MoeForwardOptions {
  /** `[N, E]` the previous MoE++ layer's router logits (gating residual), or null for the first layer. */
  readonly previousLogits?: tf.Tensor2D | null;
  /** Training mode. Default false. */
  readonly training?: boolean;
  /** For router noise. */
  readonly rng?: SeededRandom;
  /** `[N]` float32, 1 for real tokens, 0 for padding. */
  readonly tokenMask?: tf.Tensor1D;
  /**
   * Benchmark-only: ignore the router's choice and route uniformly (as MegaBlocks'
   * `uniform_expert_assignment`), so that speed can be compared without training. `true` spreads slots
   * evenly over all experts; `{ ffnShare: r }` sends exactly the share r of the slots to FFN experts
   * (evenly), the rest evenly to the zero-computation experts. Gates are `1/K`.
   */
  readonly uniformRouting?: boolean | { readonly ffnShare: number };
  /**
   * Compute the router's aux losses ({@link MoeLayerOutput.auxLosses}). Default `true`. Pass `false`
   * where nothing is trained on them (generation, evaluation, speed benchmarks): the router skips them
   * and `auxLosses` is `{}`. The routing, the output and the statistics do not change.
   */
  readonly auxiliary?: boolean;
}

/** What {@link MoeLayer.forward} returns. Tensors belong to the caller (run it inside `tf.tidy`). */
export interface MoeLayerOutput {
  /** `[N, D]` the layer's output (add it to the residual stream). */
  readonly output: tf.Tensor2D;
  /** `[N, E]` float32 router logits, for the next layer's gating residual and for analyses. */
  readonly logits: tf.Tensor2D;
  /** `[N, E]` float32 the router's softmax over all experts (routing scores, for analyses). */
  readonly probabilities: tf.Tensor2D;
  /** `[N, K]` int32 chosen experts. */
  readonly expertIndices: tf.Tensor2D;
  /** `[N, K]` float32 1 where the assignment was dispatched, 0 where dropped (capacity, padding). */
  readonly keepMask: tf.Tensor2D;
  /** `[N, K]` float32 gates as applied (0 where dropped). */
  readonly combineWeights: tf.Tensor2D;
  /**
   * Unweighted aux losses from the router (e.g. `loadBalance`, `zLoss`); `{}` when the call passed
   * {@link MoeForwardOptions.auxiliary} `false` (a key is present exactly when its loss was computed).
   */
  readonly auxLosses: Readonly<Record<string, tf.Scalar>>;
  /** Routing statistics as tensors (see `@moepp/routers`). */
  readonly stats: RouterOutput['stats'];
  /** Assignments per expert in this call (host numbers, length E). */
  readonly tokensPerExpert: readonly number[];
  /** Wall time of the expert computation (dispatch, experts, combine; not the router) in this forward pass, ms. */
  readonly expertForwardMs: number;
}

/**
 * One MoE (FFN experts only) or MoE++ (FFN + zero / copy / constant experts) layer.
 */
export class MoeLayer {
  /** The layer's config, with defaults filled. */
  readonly config: MoeLayerConfig;
  /** The router. */
  readonly router: Router;
  /** The experts in the official order: FFN, constant, copy, zero. */
  readonly experts: readonly Expert[];
  /** The kind of each expert, same order. */
  readonly kinds: readonly ExpertKind[];
  /** The indices of the FFN, copy and constant experts. */
  private readonly expertsOfKind: Readonly<Record<'ffn' | 'copy' | 'constant', readonly number[]>>;

  /**
   * @param config - widths and MoE settings
   * @param rng - draws the initial weights of the router and the experts
   * @throws `ConfigError` for invalid settings
   */
  constructor(config: MoeLayerConfig, rng: SeededRandom) {
    this.config = config;
    const pool = createExpertPool({
      dim: config.hiddenSize,
      ffnDim: config.intermediateSize,
      counts: config.experts,
      activation: 'swiglu',
      rng,
      initializerRange: config.initializerRange ?? 0.02,
    });
    this.experts = pool.experts;
    this.kinds = pool.kinds;
    const ofKind = (kind: ExpertKind) => pool.kinds.flatMap((k, e) => (k === kind ? [e] : []));
    this.expertsOfKind = { ffn: ofKind('ffn'), copy: ofKind('copy'), constant: ofKind('constant') };
    const capacity: CapacityConfig =
      config.capacityFactor === null
        ? { mode: 'dropless' }
        : config.heterogeneousCapacity
          ? { mode: 'heterogeneous', capacityFactor: config.capacityFactor, tau: config.tau }
          : { mode: 'uniform', capacityFactor: config.capacityFactor };
    this.router = new MoEPlusPlusRouter({
      dim: config.hiddenSize,
      numExperts: totalExperts(config.experts),
      topK: config.topK,
      expertKinds: pool.kinds,
      twoLayerGate: config.twoLayerGate,
      useLogitsNorm: config.logitsNorm,
      gateNormStd: config.gateNormStd,
      useMixtralGating: config.mixtralGating,
      featureNoMulTopK: !config.scaleInputByTopK,
      gatingResidual: config.gatingResidual,
      zeroExpertGate: config.zeroGateRule,
      tau: config.tau,
      capacity,
      initializerRange: config.initializerRange ?? 0.02,
      rng,
    });
  }

  /** E, the number of experts. */
  get numExperts(): number {
    return this.experts.length;
  }

  /**
   * Runs the layer.
   *
   * @param x - `[N, D]` float32 token states (already normalised)
   * @param options - gating residual input, training mode, padding mask, aux losses or not, benchmark routing
   * @returns the output and everything the router reported, see {@link MoeLayerOutput}
   * @throws `ShapeError` when x is not `[N, D]` or previousLogits not `[N, E]`
   */
  forward(x: tf.Tensor2D, options: MoeForwardOptions = {}): MoeLayerOutput {
    checkShape('MoeLayer.forward', 'x', x, [null, this.config.hiddenSize]);
    const numTokens = x.shape[0];
    const topK = this.config.topK;
    const routed = this.router.route(x, {
      training: options.training ?? false,
      previousLogits: options.previousLogits ?? null,
      auxiliary: options.auxiliary ?? true,
      ...(options.tokenMask ? { tokenMask: options.tokenMask } : {}),
      ...(options.rng ? { rng: options.rng } : {}),
    });
    let expertIndices = routed.expertIndices; // [N, K] int32
    let combineWeights = routed.combineWeights; // [N, K] float32
    let keepMask = routed.keepMask; // [N, K] float32
    if (options.uniformRouting) {
      const share = options.uniformRouting === true ? null : options.uniformRouting.ffnShare;
      expertIndices = uniformAssignment(numTokens, topK, this.kinds, share);
      combineWeights = tf.fill([numTokens, topK], 1 / topK) as tf.Tensor2D;
      keepMask = tf.onesLike(combineWeights);
    }

    const started = performance.now();
    let tokensPerExpert: readonly number[] = [];
    const output = tf.tidy(() => {
      // The official code multiplies the expert input by K unless moe_feature_no_mul_topk (the router says).
      const expertInput = routed.expertInputScale === 1 ? x : (tf.mul(x, routed.expertInputScale) as tf.Tensor2D); // [N, D]
      const plan = planDispatch(expertIndices, this.numExperts, keepMask);
      tokensPerExpert = plan.counts;
      const ffnOutput = this.ffnExpertsOutput(expertInput, combineWeights, plan); // [N, D] or null
      const slotWeights = tf.mul(combineWeights, keepMask) as tf.Tensor2D; // [N, K] gates of kept slots
      const terms = [
        ...(ffnOutput ? [ffnOutput] : []),
        ...this.copyAndConstantTerms(expertInput, expertIndices, slotWeights, plan.counts),
      ]; // [N, D] each
      if (terms.length === 0) return tf.zerosLike(x) as tf.Tensor2D;
      return terms.length === 1 ? (terms[0] as tf.Tensor2D) : (tf.addN(terms) as tf.Tensor2D); // [N, D]
    });
    // Reading the output back makes the timing include the (synchronous on cpu/wasm) kernels.
    output.dataSync();
    const expertForwardMs = performance.now() - started;

    return {
      output,
      logits: routed.logits,
      probabilities: routed.probabilities,
      expertIndices,
      keepMask,
      combineWeights,
      auxLosses: routed.auxLosses,
      stats: routed.stats,
      tokensPerExpert,
      expertForwardMs,
    };
  }

  /**
   * The FFN experts' share of the output: their rows gathered once in expert order, each expert run on
   * its block (`runFfnExperts`), scaled by the gates, scatter-added into token order.
   *
   * @param x - `[N, D]` the expert input
   * @param combineWeights - `[N, K]` float32 gates
   * @param plan - the dispatch plan (kept slots grouped by expert)
   * @returns `[N, D]`, or null when no token was routed to an FFN expert
   */
  private ffnExpertsOutput(x: tf.Tensor2D, combineWeights: tf.Tensor2D, plan: DispatchPlan): tf.Tensor2D | null {
    const active = this.expertsOfKind.ffn.filter((e) => (plan.counts[e] as number) > 0);
    if (active.length === 0) return null;
    const numTokens = x.shape[0];
    const groupSizes = active.map((e) => plan.counts[e] as number); // rows per active FFN expert
    const { tokenIds, slotIds } = plan.groupIds(active); // [M] int32 each, grouped by expert: token rows, flat slots n·K + k
    const rows = tf.gather(x, tokenIds) as tf.Tensor2D; // [M, D]
    const gates = tf.gather(combineWeights.reshape([numTokens * plan.topK]), slotIds).reshape([-1, 1]); // [M, 1]
    const outputs = runFfnExperts(active.map((e) => this.experts[e] as Expert), rows, groupSizes); // [M, D]
    return tf.unsortedSegmentSum(tf.mul(outputs, gates), tokenIds, numTokens) as tf.Tensor2D; // [N, D]
  }

  /**
   * The copy and constant experts' share of the output, computed per token with no gather or scatter.
   * With `g_e[n]` token n's gate on expert e (0 if it did not pick e):
   *
   *     copy:      g_e · x                                    (E(x) = x)
   *     constant:  g_e · (a1_e·x + a2_e·v_e),  [a1_e, a2_e] = softmax(W_c,e x)   (ConstantExpert.apply, Eq. 5)
   *     sum:       x ⊙ w + G·V,  w = Σ_copy g_e + Σ_const g_e·a1_e  [N, 1],  G = [g_e·a2_e]_const  [N, C],  V = [v_e]  [C, D]
   *
   * The constant experts' mix is computed for every token (one `[N, D]·[D, 2C]` product); tokens that
   * did not pick an expert get gate 0 for it, so values and gradients equal those of running the expert
   * on its rows alone (up to float32 rounding). Experts no token picked are left out, so, as before,
   * their weights get no gradient.
   *
   * @param x - `[N, D]` the expert input
   * @param expertIndices - `[N, K]` int32
   * @param slotWeights - `[N, K]` float32 gates of the kept slots (0 where dropped)
   * @param counts - kept assignments per expert (length E)
   * @returns the `[N, D]` term to add to the output (`x ⊙ w + G·V`, or `x ⊙ w` when no constant expert
   *   was picked); none when no token picked a copy or constant expert
   */
  private copyAndConstantTerms(
    x: tf.Tensor2D,
    expertIndices: tf.Tensor2D,
    slotWeights: tf.Tensor2D,
    counts: readonly number[],
  ): tf.Tensor2D[] {
    const picked = (e: number) => (counts[e] as number) > 0;
    const copies = this.expertsOfKind.copy.filter(picked);
    const constants = this.expertsOfKind.constant.filter(picked);
    if (copies.length === 0 && constants.length === 0) return [];
    const numConstants = constants.length; // C
    // Gate columns J = 1 + C: [all copy experts together (0 when none was picked), each picked constant
    // expert]; table[e][j] = 1 when expert e belongs to column j. gates[n, j] = Σ_k slotWeights[n, k] · table[idx[n, k], j].
    const columns = [copies, ...constants.map((e) => [e])];
    const table = tf.tensor2d(
      this.kinds.map((_, e) => columns.map((members) => (members.includes(e) ? 1 : 0))),
      [this.numExperts, columns.length],
      'float32',
    ); // [E, J]
    const gates = tf.sum(tf.mul(tf.gather(table, expertIndices), tf.expandDims(slotWeights, 2)), 1) as tf.Tensor2D; // [N, J]
    if (numConstants === 0) return [tf.mul(x, gates) as tf.Tensor2D]; // J = 1: x ⊙ w, w = the copy gates

    const experts = constants.map((e) => this.experts[e] as ConstantExpert);
    const mixWeight = (numConstants === 1 ? (experts[0] as ConstantExpert).weights.wg : tf.concat(experts.map((c) => c.weights.wg), 1)) as tf.Tensor2D; // [D, 2C]
    const vectors = tf.stack(experts.map((c) => c.weights.constant)) as tf.Tensor2D; // [C, D] V
    // x ⊙ (Σ_copy g + Σ_const g·a1) + G·V with [a1, a2] = softmax(W_c x): one op (one native kernel each way)
    return [copyConstantMix(x, gates, mixWeight, vectors)]; // [N, D]
  }

  /**
   * The layer's parameters under the official names, relative to `prefix` (e.g. `model.layers.0.mlp.moe`):
   * `gate.wg.weight` (or `gate.wg.0.weight` / `gate.wg.2.weight`), `gate.gate_map.weight`,
   * `experts.experts.{e}.up_proj.weight` / `down_proj.weight`, `experts.experts.{c}.constant`, `experts.experts.{c}.wg.weight`.
   *
   * @param prefix - the layer's name prefix
   * @returns the named parameters
   */
  parameters(prefix: string): NamedParameter[] {
    const out: NamedParameter[] = [];
    for (const [local, variable] of Object.entries(this.router.weights)) {
      out.push({ name: `${prefix}.gate.${ROUTER_NAMES[local] ?? local}`, variable, transposed: variable.shape.length === 2 });
    }
    this.experts.forEach((expert, e) => {
      for (const [local, variable] of Object.entries(expert.weights)) {
        out.push({
          name: `${prefix}.experts.experts.${e}.${EXPERT_NAMES[local] ?? local}`,
          variable,
          transposed: variable.shape.length === 2,
        });
      }
    });
    return out;
  }

  /** Frees the router's and the experts' weights. */
  dispose(): void {
    this.router.dispose();
    this.experts.forEach((expert) => expert.dispose());
  }
}

/**
 * Runs each FFN expert on its block of rows. SwiGLU experts (every MoE++ layer's) run as one
 * `groupedSwigluFfn` call of `@moepp/tensors-core`: one native kernel forward and one backward for
 * all experts when native acceleration is active, the same per-expert products as composite tf ops
 * otherwise. Other experts run one by one.
 *
 * @param experts - the FFN experts with at least one row, in the order of their blocks
 * @param rows - `[M, D]` float32, expert `i`'s rows in block `i`
 * @param groupSizes - rows per expert (length = experts, sum M, each >= 1)
 * @returns `[M, D]` float32, row by row the output of the expert that owns the row
 */
function runFfnExperts(experts: readonly Expert[], rows: tf.Tensor2D, groupSizes: readonly number[]): tf.Tensor2D {
  const swigluExperts = experts.filter((expert): expert is FfnExpert => expert instanceof FfnExpert && expert.activation === 'swiglu');
  if (swigluExperts.length === experts.length) {
    return groupedSwigluFfn(
      rows,
      groupSizes,
      swigluExperts.map((expert) => expert.weights.upProj), // [D, 2F] each
      swigluExperts.map((expert) => expert.weights.downProj), // [F, D] each
    );
  }
  if (experts.length === 1) return (experts[0] as Expert).apply(rows);
  const blocks = tf.split(rows, [...groupSizes], 0) as tf.Tensor2D[]; // [n_e, D] each
  return tf.concat(blocks.map((block, i) => (experts[i] as Expert).apply(block)), 0) as tf.Tensor2D;
}

/** The kit's local weight names -> the official PyTorch module paths. */
const ROUTER_NAMES: Readonly<Record<string, string>> = {
  wg: 'wg.weight',
  wg0: 'wg.0.weight',
  wg2: 'wg.2.weight',
  gateMap: 'gate_map.weight',
};
const EXPERT_NAMES: Readonly<Record<string, string>> = {
  upProj: 'up_proj.weight',
  downProj: 'down_proj.weight',
  constant: 'constant',
  wg: 'wg.weight',
};

/**
 * A fixed, balanced assignment for speed benchmarks: slot `s = n·K + k` goes to an FFN expert for the
 * share `ffnShare` of slots (spread evenly, Bresenham-style) and to a zero-computation expert otherwise,
 * round-robin within each group.
 *
 * @param numTokens - N
 * @param topK - K
 * @param kinds - the kind of each expert
 * @param ffnShare - the share of slots for FFN experts, or null to spread over all experts evenly
 * @returns `[N, K]` int32
 */
export function uniformAssignment(
  numTokens: number,
  topK: number,
  kinds: readonly ExpertKind[],
  ffnShare: number | null,
): tf.Tensor2D {
  const ffn = kinds.flatMap((k, i) => (k === 'ffn' ? [i] : []));
  const other = kinds.flatMap((k, i) => (k === 'ffn' ? [] : [i]));
  const values = new Int32Array(numTokens * topK);
  if (ffnShare === null) {
    for (let s = 0; s < values.length; s++) values[s] = s % kinds.length;
  } else {
    checkNumber('uniformAssignment', 'ffnShare', ffnShare, { min: 0, max: 1 });
    if (ffnShare < 1 && other.length === 0) {
      throw new ConfigError(`uniformAssignment: 'ffnShare' ${ffnShare} < 1 needs zero-computation experts, the layer has none`);
    }
    let ffnNext = 0;
    let otherNext = 0;
    for (let s = 0; s < values.length; s++) {
      const toFfn = Math.floor((s + 1) * ffnShare) > Math.floor(s * ffnShare);
      values[s] = toFfn ? (ffn[ffnNext++ % ffn.length] as number) : (other[otherNext++ % other.length] as number);
    }
  }
  return tf.tensor2d(values, [numTokens, topK], 'int32');
}
