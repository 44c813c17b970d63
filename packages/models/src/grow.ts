/**
 * Growing a trained MoE / MoE++ model by more experts, and choosing which weights to train afterwards.
 *
 * Growth keeps the official expert order `[ffn] + [constant] + [copy] + [zero]`: new experts of a kind
 * go after the existing experts of that kind, so every expert of a later kind shifts. Adding 2 FFN
 * experts to `{ ffn: 4, constant: 1, copy: 1, zero: 1 }`:
 *
 *     before   ffn0 ffn1 ffn2 ffn3 const0 copy0 zero0                  E  = 7
 *     after    ffn0 ffn1 ffn2 ffn3 FFN4 FFN5 const0 copy0 zero0        E' = 9
 *     indexMap [0, 1, 2, 3, 6, 7, 8]                                   old index -> new index
 *
 * The router grows with it (tfjs `[in, out]` layout, so a PyTorch row is a column here):
 *
 *     wg       [D, E]   -> [D, E']     old columns moved to their new index, new columns fresh N(0, std²)
 *     gateMap  [E, E]   -> [E', E']    old block moved along both axes; rows of new experts (their
 *                                      previous-layer logit as input) zero; columns of new experts fresh
 *     wg0      [D, 8E]  -> [D, 8E']    2-layer gate: old hidden units kept, 8·ΔE new hidden units fresh
 *     wg2      [8E, E]  -> [8E', E']   old block kept (columns moved); rows of new hidden units zero;
 *                                      columns of new experts fresh
 *
 * Zero rows for new inputs make growth function-preserving up to the new experts' own logits: with
 * `logitsNorm` off, once the new experts' columns make their logits very negative (so they are never
 * picked and their softmax mass underflows), the grown model computes the old model's outputs. With
 * `logitsNorm` on (the default) it cannot be exact: the per-token std is taken over all E' logits.
 *
 * Gating residuals thread each MoE++ layer's `[N, E]` logits into the next layer's `gateMap`, so one
 * layer's E fixes the next layer's `gateMap` input width. {@link addExperts} on a {@link DecoderLM}
 * therefore grows every MoE layer by the same counts (the model has one set of MoE settings); on a lone
 * {@link MoeLayer} it grows both axes of `gateMap`, which is consistent only when the layer that feeds
 * it is grown by the same counts.
 */
import * as tf from '@tensorflow/tfjs';
import { checkNumber, ConfigError, describe, type SeededRandom } from '@moepp/tensors-core';
import { DecoderLM } from './decoder.js';
import { MoeLayer } from './moe-layer.js';
import { resolveModelConfig, totalExperts, type ExpertCounts } from './config.js';
import { copyParameters } from './upcycle.js';

/** The official order of expert kinds in a layer. */
const LAYOUT_ORDER: readonly (keyof ExpertCounts)[] = ['ffn', 'constant', 'copy', 'zero'];

/** What {@link addExperts} returns. */
export interface ExpertGrowth<T> {
  /** The grown layer or model. It owns new variables; the input is left untouched (dispose both). */
  readonly grown: T;
  /** Indices of the added experts in the grown layout, ascending (the same in every MoE layer). */
  readonly newExperts: readonly number[];
  /** `indexMap[e]` is the grown index of old expert `e` (length old E). */
  readonly indexMap: readonly number[];
}

/**
 * Where each expert of a layer goes when the counts grow, keeping the official order
 * `[ffn] + [constant] + [copy] + [zero]` and the experts of each kind in their order.
 *
 * @param before - the old counts
 * @param after - the new counts, each `>=` the old one
 * @returns `indexMap` (old index -> new index, length E) and `newExperts` (ascending)
 * @throws `ConfigError` when a count shrinks
 */
export function expertIndexMap(
  before: ExpertCounts,
  after: ExpertCounts,
): {
  /** `indexMap[e]` is the new index of old expert `e`. */
  indexMap: number[];
  /** The indices of the added experts, ascending. */
  newExperts: number[];
} {
  const indexMap: number[] = [];
  const newExperts: number[] = [];
  let offset = 0;
  for (const kind of LAYOUT_ORDER) {
    if (after[kind] < before[kind]) {
      throw new ConfigError(`expertIndexMap: '${kind}' experts can only grow, got ${before[kind]} -> ${after[kind]}`);
    }
    for (let i = 0; i < after[kind]; i++) (i < before[kind] ? indexMap : newExperts).push(offset + i);
    offset += after[kind];
  }
  return { indexMap, newExperts };
}

/**
 * Adds experts to every MoE layer of a trained model. Existing experts keep their values (moved to
 * their new index, see {@link expertIndexMap}); new experts and the router's new columns are drawn
 * fresh; `gateMap` and the 2-layer gate grow as the module notes describe. Everything else (embedding,
 * attention, norms, dense blocks, LM head) is copied.
 *
 * Names under `model.layers.{l}.mlp.moe.experts.experts.{e}` follow the new indices, so optimiser state
 * or routing statistics keyed by expert index must be remapped with `indexMap`.
 *
 * @param target - a model with MoE layers
 * @param add - experts to add per layer, by kind (absent kinds: 0)
 * @param rng - draws the new weights
 * @returns the grown model, the new experts' indices and the old-to-new index map
 * @throws `ConfigError` for a dense model, counts that are not integers >= 0, or nothing to add
 */
export function addExperts(target: DecoderLM, add: Partial<ExpertCounts>, rng: SeededRandom): ExpertGrowth<DecoderLM>;
/**
 * Adds experts to one MoE layer (for layers used on their own; inside a {@link DecoderLM} grow the whole
 * model so that the next layer's `gateMap` input stays consistent). Same rules as the model overload.
 *
 * @param target - the layer
 * @param add - experts to add, by kind (absent kinds: 0)
 * @param rng - draws the new weights
 * @returns the grown layer, the new experts' indices and the old-to-new index map
 * @throws `ConfigError` for counts that are not integers >= 0, or nothing to add
 */
export function addExperts(target: MoeLayer, add: Partial<ExpertCounts>, rng: SeededRandom): ExpertGrowth<MoeLayer>;
export function addExperts(
  target: DecoderLM | MoeLayer,
  add: Partial<ExpertCounts>,
  rng: SeededRandom,
): ExpertGrowth<DecoderLM> | ExpertGrowth<MoeLayer> {
  const op = 'addExperts';
  if (target instanceof MoeLayer) {
    const counts = grownCounts(op, target.config.experts, add);
    const { indexMap, newExperts } = expertIndexMap(target.config.experts, counts);
    const grown = new MoeLayer({ ...target.config, experts: counts }, rng);
    try {
      growLayerInto(op, target, grown, indexMap);
    } catch (error) {
      grown.dispose();
      throw error;
    }
    return { grown, newExperts, indexMap };
  }
  const moe = target.config.moe;
  if (!moe) throw new ConfigError(`${op}: the model is dense (config.moe null); use upcycle to make an MoE model from it`);
  const counts = grownCounts(op, moe.experts, add);
  const { indexMap, newExperts } = expertIndexMap(moe.experts, counts);
  const grown = new DecoderLM(resolveModelConfig({ ...target.config, moe: { ...moe, experts: counts } }), rng.nextUint32());
  try {
    copyParameters(target.parameters(), grown.parameters(), (name) => !name.includes('.mlp.moe.'), op);
    grown.blocks.forEach((block, layer) => {
      const old = target.blocks[layer]?.ffn;
      if (block.ffn instanceof MoeLayer && old instanceof MoeLayer) growLayerInto(op, old, block.ffn, indexMap);
    });
  } catch (error) {
    grown.dispose();
    throw error;
  }
  return { grown, newExperts, indexMap };
}

function grownCounts(op: string, before: ExpertCounts, add: Partial<ExpertCounts>): ExpertCounts {
  if (typeof add !== 'object' || add === null) {
    throw new ConfigError(`${op}: 'add' must be an object of expert counts per kind, got ${describe(add)}`);
  }
  for (const key of Object.keys(add)) {
    if (!(LAYOUT_ORDER as readonly string[]).includes(key)) {
      throw new ConfigError(`${op}: 'add' has unknown expert kind '${key}'; kinds are ${LAYOUT_ORDER.map((k) => `'${k}'`).join(', ')}`);
    }
  }
  const more = (kind: keyof ExpertCounts) => checkNumber(op, `add.${kind}`, add[kind] ?? 0, { integer: true, min: 0 });
  const added = { ffn: more('ffn'), zero: more('zero'), copy: more('copy'), constant: more('constant') };
  if (totalExperts(added) === 0) throw new ConfigError(`${op}: 'add' adds no experts, got ${describe(add)}`);
  return {
    ffn: before.ffn + added.ffn,
    zero: before.zero + added.zero,
    copy: before.copy + added.copy,
    constant: before.constant + added.constant,
  };
}

/** Writes `old`'s experts and router into the freshly built, larger `grown` (see the module notes). */
function growLayerInto(op: string, old: MoeLayer, grown: MoeLayer, indexMap: readonly number[]): void {
  old.experts.forEach((expert, e) => {
    const moved = grown.experts[indexMap[e] as number];
    if (!moved || moved.kind !== expert.kind) throw new ConfigError(`${op}: expert ${e} ('${expert.name}') has no ${expert.kind} slot after growth`);
    for (const [local, variable] of Object.entries(expert.weights)) {
      const into = moved.weights[local];
      if (!into) throw new ConfigError(`${op}: the grown expert ${indexMap[e]} has no weight '${local}'`);
      into.assign(variable);
    }
  });
  const oldExperts = old.numExperts;
  const newExperts = grown.numExperts;
  const expertSource = inverse(indexMap, newExperts); // new expert -> old expert or -1
  const hiddenSource = (units: number, oldUnits: number) => Array.from({ length: units }, (_, u) => (u < oldUnits ? u : -1));
  for (const [local, variable] of Object.entries(old.router.weights)) {
    const into = grown.router.weights[local];
    if (!into) throw new ConfigError(`${op}: the grown router has no weight '${local}'`);
    const [rows, cols] = into.shape as [number, number];
    const [oldRows, oldCols] = variable.shape as [number, number];
    const keepRows = Array.from({ length: rows }, (_, r) => r);
    switch (local) {
      case 'wg': // [D, E]
        growMatrix(variable, into, keepRows, expertSource);
        break;
      case 'wg0': // [D, 8E]: hidden units keep their index, new ones are appended
        growMatrix(variable, into, keepRows, hiddenSource(cols, oldCols));
        break;
      case 'wg2': // [8E, E]
        growMatrix(variable, into, hiddenSource(rows, oldRows), expertSource);
        break;
      case 'gateMap': // [E, E]: previous-layer experts x this layer's experts, same layout on both axes
        if (oldRows !== oldExperts) throw new ConfigError(`${op}: gateMap is [${oldRows}, ${oldCols}], expected [${oldExperts}, ${oldExperts}]`);
        growMatrix(variable, into, expertSource, expertSource);
        break;
      default:
        throw new ConfigError(`${op}: does not know how to grow router weight '${local}'`);
    }
  }
}

function inverse(indexMap: readonly number[], size: number): number[] {
  const source = new Array<number>(size).fill(-1);
  indexMap.forEach((to, from) => (source[to] = from));
  return source;
}

/**
 * `into[r, c] = old[rowSource[r], colSource[c]]` where both sources exist; 0 where the row is new (a
 * new input must not change old outputs); `into`'s fresh value where only the column is new.
 * One-off host-side copy: router matrices are small (at most `D × 8E`).
 */
function growMatrix(old: tf.Variable, into: tf.Variable, rowSource: readonly number[], colSource: readonly number[]): void {
  const oldCols = old.shape[1] as number;
  const cols = colSource.length;
  const oldValues = old.dataSync();
  const fresh = into.dataSync();
  const values = new Float32Array(rowSource.length * cols);
  rowSource.forEach((fromRow, r) => {
    for (let c = 0; c < cols; c++) {
      const fromCol = colSource[c] as number;
      values[r * cols + c] = fromRow < 0 ? 0 : fromCol < 0 ? (fresh[r * cols + c] as number) : (oldValues[fromRow * oldCols + fromCol] as number);
    }
  });
  const grown = tf.tensor2d(values, [rowSource.length, cols]);
  into.assign(grown);
  grown.dispose();
}

/** Which parameters {@link selectTrainable} returns. Every group defaults to false (frozen). */
export interface TrainableSpec {
  /** `model.embed_tokens.weight` and `lm_head.weight`. */
  readonly embeddings?: boolean;
  /** `self_attn.{q,k,v,o}_proj.weight` of every block. */
  readonly attention?: boolean;
  /** `input_layernorm`, `post_attention_layernorm` and the final `model.norm`. */
  readonly norms?: boolean;
  /** The MLP of dense blocks (`mlp.{gate,up,down}_proj.weight`; a dense model, or `interval > 1`). */
  readonly denseFfn?: boolean;
  /** Every MoE router (`mlp.moe.gate.*`: `wg` or `wg.0` / `wg.2`, and `gate_map`). */
  readonly router?: boolean;
  /**
   * Experts of every MoE layer: `'all'`, `'none'`, or expert indices (e.g. {@link ExpertGrowth.newExperts}
   * to train only the experts {@link addExperts} added). Zero and copy experts have no weights.
   */
  readonly experts?: 'all' | 'none' | readonly number[];
  /** Also select every parameter whose official name matches. */
  readonly include?: RegExp;
  /** Finally leave out every parameter whose official name matches. */
  readonly exclude?: RegExp;
  /**
   * Also set `variable.trainable` (true on the selected, false on the rest), so that code which passes
   * every variable to tfjs still skips the frozen ones. Default false: the flag is global state that
   * stays on the variables (a later full fine-tune would silently skip them until reset), and tfjs
   * returns `null` gradients for non-trainable variables in an explicit list.
   */
  readonly markFrozen?: boolean;
}

const GROUPS: readonly (readonly [Exclude<keyof TrainableSpec, 'experts' | 'include' | 'exclude' | 'markFrozen'>, RegExp])[] = [
  ['embeddings', /^(model\.embed_tokens|lm_head)\.weight$/],
  ['attention', /\.self_attn\./],
  ['norms', /(^model\.norm|\.input_layernorm|\.post_attention_layernorm)\.weight$/],
  ['denseFfn', /\.mlp\.(gate|up|down)_proj\.weight$/],
  ['router', /\.mlp\.moe\.gate\./],
];
const EXPERT_NAME = /\.mlp\.moe\.experts\.experts\.(\d+)\./;

/**
 * The variables to train, for freezing: pass the result to the optimiser (`optimizer.minimize(loss,
 * false, variables)`) or the trainer's variable list, and the rest stay as they are. Groups are matched
 * on the official parameter names of {@link DecoderLM.parameters}.
 *
 * @param model - the model
 * @param spec - which groups to train (see {@link TrainableSpec}; unnamed groups are frozen)
 * @returns the selected variables, in {@link DecoderLM.parameters} order
 * @throws `ConfigError` for expert indices outside `[0, E)` or that are not integers, or when the
 *   spec selects no variable at all
 */
export function selectTrainable(model: DecoderLM, spec: TrainableSpec): tf.Variable[] {
  const op = 'selectTrainable';
  const experts = spec.experts ?? 'none';
  let expertSet: ReadonlySet<number> | 'all' | 'none';
  if (experts === 'all' || experts === 'none') {
    expertSet = experts;
  } else if (Array.isArray(experts)) {
    const numExperts = model.config.moe ? totalExperts(model.config.moe.experts) : 0;
    expertSet = new Set(
      experts.map((e, i) => checkNumber(op, `experts[${i}]`, e, { integer: true, min: 0, max: Math.max(numExperts - 1, 0) })),
    );
    if (numExperts === 0 && experts.length > 0) throw new ConfigError(`${op}: 'experts' lists indices but the model is dense`);
  } else {
    throw new ConfigError(`${op}: 'experts' must be 'all', 'none' or an array of expert indices, got ${describe(experts)}`);
  }
  const selected = model.parameters().filter(({ name }) => {
    if (spec.exclude?.test(name)) return false;
    if (spec.include?.test(name)) return true;
    const expert = EXPERT_NAME.exec(name);
    if (expert) return expertSet === 'all' || (expertSet !== 'none' && expertSet.has(Number(expert[1])));
    return GROUPS.some(([group, pattern]) => spec[group] === true && pattern.test(name));
  });
  if (selected.length === 0) throw new ConfigError(`${op}: the spec selects no variable: ${describe(spec)}`);
  if (spec.markFrozen) {
    const chosen = new Set<tf.Variable>(selected.map((p) => p.variable));
    for (const { variable } of model.parameters()) variable.trainable = chosen.has(variable);
  }
  return selected.map((p) => p.variable);
}
