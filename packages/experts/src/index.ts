/**
 * `@moepp/experts`: the experts of MoE and MoE++ layers on TensorFlow.js.
 *
 * - {@link FfnExpert}: SwiGLU (the official MoE++ fused layout), GELU and ReLU MLPs;
 * - MoE++'s zero-computation experts: {@link ZeroExpert}, {@link CopyExpert}, {@link ConstantExpert};
 * - {@link createExpertPool}: a heterogeneous pool in the official order, and {@link constantExpertCount} (Eq. 10);
 * - {@link SoftMixture}: the classic dense softmax-gated mixture (Jacobs et al. 1991).
 *
 * Shape legend: `N` tokens, `D` model width, `F` FFN width, `E` experts.
 *
 * @packageDocumentation
 */
export type { Expert } from './types.js';
export {
  ACTIVATION_FLOPS_PER_UNIT,
  FFN_ACTIVATIONS,
  FfnExpert,
  type FfnActivation,
  type FfnExpertConfig,
  type FfnWeights,
} from './ffn.js';
export {
  ConstantExpert,
  CopyExpert,
  ZeroExpert,
  type ConstantExpertConfig,
  type ConstantExpertWeights,
  type ZeroComputationExpertConfig,
} from './zero-computation.js';
export {
  constantExpertCount,
  createExpertPool,
  ExpertPool,
  moeppExpertCounts,
  type ExpertCounts,
  type ExpertPoolConfig,
} from './pool.js';
export {
  createLinearSoftMixture,
  mixtureNegativeLogLikelihood,
  SoftMixture,
  type LinearSoftMixtureConfig,
  type SoftMixtureConfig,
  type SoftMixtureOutput,
} from './soft-mixture.js';
