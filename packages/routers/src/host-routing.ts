/**
 * The tail of a token-choice router — logits normalisation, softmax, top-k, gates (with the MoE++
 * zero-expert rule) and the two aux losses — as ONE op computed on the host, with its own gradient.
 *
 * Why: a router's tensors are tiny (`[N, E]` with E ≈ 10), so on cpu and wasm the tfjs form of this
 * tail costs its kernel launches, not its arithmetic: about 60 launches forward and 150 backward per
 * layer (≈ 20 µs each, more under autodiff), against well under a millisecond of work. Here the logits
 * are read back once (the MoE layer reads the routing back anyway, to plan its dispatch), the forward
 * and backward passes run as plain loops in float64, and the results come back as float32 tensors.
 *
 *     r      = l / (std(l) / gateNormStd)          (logits norm, optional; std unbiased, var floored at 1e-24)
 *     p      = softmax(r)                          [N, E]
 *     idx    = top-k of p                          [N, K] (ties: the lower expert index first, as tf.topk)
 *     g      = p[idx]; with drop-and-renormalize: g_k = p[idx_k]·(1 − zero_k) / Σ_j …  (not renormalised
 *              when Σ < 1e-30: every pick was a zero expert, and the gates are 0)
 *     L_bal  = Σ_e η_e · f_e · P_e,   f_e = #assignments to e / N,  P_e = Σ_n p[n, e] / N   (Eq. 7)
 *     L_z    = Σ_n logsumexp(r_n)² / N
 *
 * The composite form (`MoEPlusPlusRouter` with `hostRouting: false`) is the reference: values agree to
 * float32 rounding, gradients to about 1e-6 relative (the tests compare both).
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, checkShape, ConfigError } from '@moepp/tensors-core';

/** Settings of {@link hostTokenChoiceRouting}. */
export interface HostRoutingSettings {
  /** K, assignments per token, in `[1, E]`. */
  readonly topK: number;
  /** Normalise the logits by their (unbiased) std over experts times this; null: no normalisation. */
  readonly gateNormStd: number | null;
  /** `[E]`: true for the experts whose gate is dropped before renormalising (MoE++ zero experts); null: gates are the raw top-k probabilities. */
  readonly dropExperts: readonly boolean[] | null;
  /** `[E]` η_e of the load-balance loss (τ for zero-computation experts, 1 for FFN experts in MoE++). */
  readonly balanceWeights: readonly number[];
}

/** What {@link hostTokenChoiceRouting} returns; all new tensors, owned by the caller. */
export interface HostRoutingResult {
  /** `[N, E]` float32 softmax of the (normalised) logits; differentiable. */
  readonly probabilities: tf.Tensor2D;
  /** `[N, K]` int32 chosen experts, largest probability first. */
  readonly expertIndices: tf.Tensor2D;
  /** `[N, K, E]` float32 one-hot of `expertIndices`. */
  readonly selection: tf.Tensor3D;
  /** `[N, K]` float32 gates; differentiable. */
  readonly gates: tf.Tensor2D;
  /** The heterogeneous load-balance loss (unweighted); differentiable through the probabilities. */
  readonly loadBalance: tf.Scalar;
  /** The router z-loss (unweighted); differentiable. */
  readonly zLoss: tf.Scalar;
  /** Host numbers: assignments per expert (before any capacity), length E. */
  readonly assignmentsPerExpert: readonly number[];
  /** Host number: mean over tokens of the entropy (nats) of the probabilities, `−Σ p·log max(p, 1e-30)`. */
  readonly meanEntropy: number;
}

const VARIANCE_FLOOR = 1e-24;
/** Below this sum of kept gates a token's gates are not renormalised (they are all 0: every pick was a zero expert). */
export const GATE_SUM_FLOOR = 1e-30;

/** The forward pass's values the backward pass needs (host arrays, float64). */
interface ForwardState {
  readonly n: number;
  readonly e: number;
  readonly k: number;
  readonly logits: Float64Array;
  readonly probabilities: Float64Array;
  readonly indices: Int32Array;
  readonly logSumExp: Float64Array;
  /** Per token: mean and std of the logits (logits norm only) and whether the variance floor was inactive. */
  readonly mean: Float64Array;
  readonly std: Float64Array;
  readonly varianceOpen: Uint8Array;
  /** Per token: Σ_k of the kept gates before renormalising (drop rule only). */
  readonly gateSum: Float64Array;
  /** f_e, the share of assignments per expert. */
  readonly fractions: Float64Array;
}

/**
 * Runs the router tail on the host (see the module notes).
 *
 * @param logits - `[N, E]` float32 router logits `G(x)`, differentiable
 * @param settings - see {@link HostRoutingSettings}
 * @returns probabilities, indices, one-hot selection, gates and the two aux losses
 * @throws `ShapeError` for logits that are not `[N, E]` float32 with N >= 1; `ConfigError` for settings
 *   that do not fit E
 */
export function hostTokenChoiceRouting(logits: tf.Tensor2D, settings: HostRoutingSettings): HostRoutingResult {
  const op = 'hostTokenChoiceRouting';
  checkShape(op, 'logits', logits, ['N', 'E'], 'float32');
  const [n, e] = logits.shape;
  const k = checkNumber(op, 'topK', settings.topK, { integer: true, min: 1, max: e });
  if (settings.gateNormStd !== null) {
    checkNumber(op, 'gateNormStd', settings.gateNormStd, { greaterThan: 0 });
    if (e < 2) throw new ConfigError(`${op}: the logits norm needs E >= 2 (unbiased std over experts), got E = ${e}`);
  }
  if (settings.dropExperts !== null && settings.dropExperts.length !== e) {
    throw new ConfigError(`${op}: 'dropExperts' must have one entry per expert (${e}), got ${settings.dropExperts.length}`);
  }
  if (settings.balanceWeights.length !== e) {
    throw new ConfigError(`${op}: 'balanceWeights' must have one entry per expert (${e}), got ${settings.balanceWeights.length}`);
  }
  if (n < 1) throw new ConfigError(`${op}: 'logits' must have at least one token, got shape [${n}, ${e}]`);

  const forward = routeForward(Float64Array.from(logits.dataSync()), n, e, k, settings);
  // Four outputs, four custom ops over the same forward pass: tfjs adds their logits gradients, and an
  // output no loss depends on (the probabilities in training, the aux losses when not asked for) costs
  // no backward pass at all. (`tf.customGrad` takes one output per op.)
  const output = <T extends tf.Tensor>(make: () => T, upstream: (dy: tf.Tensor) => Upstream): T =>
    tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
      void args; // the logits; the forward pass above already read them
      return {
        value: make(),
        gradFunc: (dy: tf.Tensor) => [tf.tensor2d(routeBackward(forward.state, settings, upstream(dy)), [n, e], 'float32')],
      };
    })(logits) as T;
  const selection = new Float32Array(n * k * e);
  forward.state.indices.forEach((expert, slot) => (selection[slot * e + expert] = 1));
  return {
    probabilities: output(() => tf.tensor2d(forward.probabilities, [n, e], 'float32'), (dy) => ({ dProbabilities: dy.dataSync() as Float32Array })),
    expertIndices: tf.tensor2d(forward.state.indices, [n, k], 'int32'),
    selection: tf.tensor3d(selection, [n, k, e], 'float32'),
    gates: output(() => tf.tensor2d(forward.gates, [n, k], 'float32'), (dy) => ({ dGates: dy.dataSync() as Float32Array })),
    loadBalance: output(() => tf.scalar(forward.loadBalance, 'float32'), (dy) => ({ dLoadBalance: dy.dataSync()[0] as number })),
    zLoss: output(() => tf.scalar(forward.zLoss, 'float32'), (dy) => ({ dZLoss: dy.dataSync()[0] as number })),
    assignmentsPerExpert: Array.from(forward.counts),
    meanEntropy: forward.entropySum / n,
  };
}

/** Upstream gradients of the outputs; a missing one is zero. */
interface Upstream {
  readonly dProbabilities?: Float32Array;
  readonly dGates?: Float32Array;
  readonly dLoadBalance?: number;
  readonly dZLoss?: number;
}

/** The forward pass on host arrays. */
function routeForward(
  logits: Float64Array,
  n: number,
  e: number,
  k: number,
  settings: HostRoutingSettings,
): { probabilities: Float32Array; gates: Float32Array; loadBalance: number; zLoss: number; counts: Float64Array; entropySum: number; state: ForwardState } {
  const probabilities = new Float64Array(n * e);
  const probabilities32 = new Float32Array(n * e);
  const gates = new Float32Array(n * k);
  const indices = new Int32Array(n * k);
  const logSumExp = new Float64Array(n);
  const mean = new Float64Array(n);
  const std = new Float64Array(n);
  const varianceOpen = new Uint8Array(n);
  const gateSum = new Float64Array(n);
  const counts = new Float64Array(e);
  const meanProbabilities = new Float64Array(e);
  const routing = new Float64Array(e);
  let zSum = 0;
  let entropySum = 0;
  // Settings as locals of one type each: the loops below stay in V8's optimised code.
  const normStd = settings.gateNormStd ?? 0;
  const drop = settings.dropExperts === null ? null : Uint8Array.from(settings.dropExperts, (dropped) => (dropped ? 1 : 0));
  for (let t = 0; t < n; t++) {
    const row = t * e;
    // r = l / (std / gateNormStd)
    if (normStd > 0) {
      let sum = 0;
      for (let j = 0; j < e; j++) sum += logits[row + j] as number;
      const m = sum / e;
      let squares = 0;
      for (let j = 0; j < e; j++) {
        const centred = (logits[row + j] as number) - m;
        squares += centred * centred;
      }
      const variance = squares / (e - 1);
      varianceOpen[t] = variance >= VARIANCE_FLOOR ? 1 : 0;
      const s = Math.sqrt(Math.max(variance, VARIANCE_FLOOR));
      mean[t] = m;
      std[t] = s;
      const scale = s / normStd;
      for (let j = 0; j < e; j++) routing[j] = (logits[row + j] as number) / scale;
    } else {
      for (let j = 0; j < e; j++) routing[j] = logits[row + j] as number;
    }
    // p = softmax(r); logsumexp for the z-loss
    let max = -Infinity;
    for (let j = 0; j < e; j++) max = Math.max(max, routing[j] as number);
    let total = 0;
    for (let j = 0; j < e; j++) {
      const exp = Math.exp((routing[j] as number) - max); // one exp per element: they dominate this loop
      routing[j] = exp;
      total += exp;
    }
    const lse = max + Math.log(total);
    for (let j = 0; j < e; j++) {
      const p = (routing[j] as number) / total;
      probabilities[row + j] = p;
      probabilities32[row + j] = p;
      meanProbabilities[j] = (meanProbabilities[j] as number) + p;
      entropySum -= p * Math.log(Math.max(p, 1e-30));
    }
    logSumExp[t] = lse;
    zSum += lse * lse;
    // top-k on the float32 probabilities (the ones returned), ties to the lower index
    for (let slot = 0; slot < k; slot++) {
      let best = -1;
      let bestValue = -Infinity;
      for (let j = 0; j < e; j++) {
        let taken = false;
        for (let q = 0; q < slot; q++) if (indices[t * k + q] === j) taken = true;
        const value = probabilities32[row + j] as number;
        if (!taken && (best < 0 || value > bestValue)) {
          best = j;
          bestValue = value;
        }
      }
      indices[t * k + slot] = best;
      counts[best] = (counts[best] as number) + 1;
    }
    // gates
    if (drop !== null) {
      let sum = 0;
      for (let slot = 0; slot < k; slot++) {
        const expert = indices[t * k + slot] as number;
        if (drop[expert] === 0) sum += probabilities[row + expert] as number;
      }
      gateSum[t] = sum;
      const denominator = sum >= GATE_SUM_FLOOR ? sum : 1;
      for (let slot = 0; slot < k; slot++) {
        const expert = indices[t * k + slot] as number;
        gates[t * k + slot] = drop[expert] === 1 ? 0 : (probabilities[row + expert] as number) / denominator;
      }
    } else {
      for (let slot = 0; slot < k; slot++) gates[t * k + slot] = probabilities[row + (indices[t * k + slot] as number)] as number;
    }
  }
  const fractions = counts.map((c) => c / n);
  let loadBalance = 0;
  for (let j = 0; j < e; j++) loadBalance += (settings.balanceWeights[j] as number) * (fractions[j] as number) * ((meanProbabilities[j] as number) / n);
  return {
    probabilities: probabilities32,
    gates,
    loadBalance,
    zLoss: zSum / n,
    counts,
    entropySum,
    state: { n, e, k, logits, probabilities, indices, logSumExp, mean, std, varianceOpen, gateSum, fractions },
  };
}

/** The gradient with respect to the logits, given the upstream gradients of the four outputs. */
function routeBackward(state: ForwardState, settings: HostRoutingSettings, upstream: Upstream): Float32Array {
  const { n, e, k, logits, probabilities, indices, logSumExp, mean, std, varianceOpen, gateSum, fractions } = state;
  const { dProbabilities, dGates } = upstream;
  const dLoadBalance = upstream.dLoadBalance ?? 0;
  const dZLoss = upstream.dZLoss ?? 0;
  const out = new Float32Array(n * e);
  const dp = new Float64Array(e);
  const dr = new Float64Array(e);
  for (let t = 0; t < n; t++) {
    const row = t * e;
    // into p: the probabilities output, the load-balance loss (through P_e), the gates
    for (let j = 0; j < e; j++) {
      dp[j] = (dProbabilities ? (dProbabilities[row + j] as number) : 0) + (dLoadBalance * (settings.balanceWeights[j] as number) * (fractions[j] as number)) / n;
    }
    if (dGates === undefined) {
      // no gradient through the gates
    } else if (settings.dropExperts !== null) {
      const sum = gateSum[t] as number;
      const denominator = sum >= GATE_SUM_FLOOR ? sum : 1;
      let dSum = 0; // through the renormalisation, which only happens when Σ >= floor
      for (let slot = 0; slot < k; slot++) {
        const expert = indices[t * k + slot] as number;
        if (!settings.dropExperts[expert]) dSum -= ((dGates[t * k + slot] as number) * (probabilities[row + expert] as number)) / (denominator * denominator);
      }
      if (!(sum >= GATE_SUM_FLOOR)) dSum = 0;
      for (let slot = 0; slot < k; slot++) {
        const expert = indices[t * k + slot] as number;
        if (settings.dropExperts[expert]) continue;
        dp[expert] = (dp[expert] as number) + (dGates[t * k + slot] as number) / denominator + dSum;
      }
    } else {
      for (let slot = 0; slot < k; slot++) {
        const expert = indices[t * k + slot] as number;
        dp[expert] = (dp[expert] as number) + (dGates[t * k + slot] as number);
      }
    }
    // softmax backward, plus the z-loss: d lse / dr = p
    let dot = 0;
    for (let j = 0; j < e; j++) dot += (probabilities[row + j] as number) * (dp[j] as number);
    const dLse = (dZLoss * 2 * (logSumExp[t] as number)) / n;
    for (let j = 0; j < e; j++) dr[j] = (probabilities[row + j] as number) * ((dp[j] as number) - dot + dLse);
    // logits norm backward: r_j = l_j · c / s,  s = √max(var, floor),  var = Σ (l − mean)² / (E − 1)
    if (settings.gateNormStd !== null) {
      const c = settings.gateNormStd;
      const s = std[t] as number;
      let dStd = 0;
      for (let j = 0; j < e; j++) dStd -= ((dr[j] as number) * (logits[row + j] as number) * c) / (s * s);
      const dVariance = varianceOpen[t] ? dStd / (2 * s) : 0;
      for (let j = 0; j < e; j++) {
        out[row + j] = ((dr[j] as number) * c) / s + (dVariance * 2 * ((logits[row + j] as number) - (mean[t] as number))) / (e - 1);
      }
    } else {
      for (let j = 0; j < e; j++) out[row + j] = dr[j] as number;
    }
  }
  return out;
}
