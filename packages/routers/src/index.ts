/**
 * `@moepp/routers`: routers for Mixture-of-Experts layers on TensorFlow.js.
 *
 * - {@link TopKRouter}: token-choice top-k (softmax-then-top-k, optionally renormalised; or Mixtral's top-k-then-softmax);
 * - {@link NoisyTopKRouter}: Shazeer et al. 2017 noisy top-k gating with importance and load losses;
 * - {@link ExpertChoiceRouter}: Zhou et al. 2022 expert choice;
 * - {@link MoEPlusPlusRouter}: the MoE++ pathway-aware router with gating residuals and every official switch;
 *   its routing tail runs as one host-side op with its own gradient ({@link hostTokenChoiceRouting});
 * - capacity ({@link CapacityConfig}), aux losses as pure functions, routing statistics.
 *
 * Shape legend: `N` tokens, `D` model width, `E` experts, `K` top-k, `C` capacity.
 *
 * @packageDocumentation
 */
export type { Router, RouteOptions, RouterOutput, RoutingStats } from './types.js';
export { disposeRouterOutput } from './types.js';
export { TopKRouter, TOP_K_GATINGS, type TopKGating, type TopKRouterConfig } from './top-k.js';
export { NoisyTopKRouter, type NoisyTopKRouterConfig } from './noisy-top-k.js';
export { ExpertChoiceRouter, type ExpertChoiceRouterConfig } from './expert-choice.js';
export {
  MoEPlusPlusRouter,
  moeppRouterConfigFromOfficial,
  TWO_LAYER_GATE_WIDTH_PER_EXPERT,
  ZERO_EXPERT_GATE_RULES,
  type MoEPlusPlusRouterConfig,
  type MoEPlusPlusRouterWeights,
  type OfficialMoEPlusPlusConfig,
  type ZeroExpertGateRule,
} from './moepp-router.js';
export { GATE_SUM_FLOOR, hostTokenChoiceRouting, type HostRoutingResult, type HostRoutingSettings } from './host-routing.js';
export {
  CAPACITY_MODES,
  CAPACITY_PRIORITIES,
  capacityKeepMask,
  checkCapacityConfig,
  expertCapacities,
  type CapacityConfig,
  type CapacityPriority,
} from './capacity.js';
export {
  coefficientOfVariationSquared,
  heterogeneousLoadBalanceLoss,
  importanceLoss,
  loadLoss,
  meanProbabilities,
  normalCdf,
  probabilityInTopK,
  routerZLoss,
  selectionFractions,
  switchLoadBalanceLoss,
} from './losses.js';
export {
  computeRoutingStats,
  readRoutingStats,
  readRoutingStatsSync,
  type RoutingStatsInput,
  type RoutingStatsValues,
} from './stats.js';
