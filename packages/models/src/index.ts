/**
 * `@moepp/models`: the MoE / MoE++ layer and LLaMA-style decoder language models on TensorFlow.js.
 *
 * - {@link MoeLayer}: router + experts with sparse dispatch (vanilla MoE or MoE++);
 * - {@link DecoderLM} / {@link createModel}: decoder LMs with dense, MoE or MoE++ feed-forward blocks,
 *   threading router logits from one MoE++ layer to the next;
 * - {@link presetConfig}: matched dense / MoE / MoE++ presets; {@link countModelParameters},
 *   {@link countModelFlops}: exact accounting;
 * - checkpoints in the official MoE++ Hugging Face layout (safetensors) and the crash-safe writes they
 *   use ({@link replaceFolderAtomically}), sampling.
 *
 * Shape legend: `B` batch, `T` sequence, `N = B·T` tokens, `D` model width, `F` FFN width,
 * `E` experts, `K` experts per token, `V` vocabulary.
 *
 * @packageDocumentation
 */
export {
  DEFAULT_MOE_SETTINGS,
  isMoeBlock,
  resolveModelConfig,
  totalExperts,
  type ExpertCounts,
  type ModelConfig,
  type ModelConfigInput,
  type MoeSettings,
} from './config.js';
export { namedParameters, type NamedParameter } from './parameters.js';
export { RmsNorm } from './layers/rms-norm.js';
export { CausalSelfAttention, applyRotary, rotaryTables, type AttentionConfig } from './layers/attention.js';
export { DenseFfn } from './layers/dense-ffn.js';
export {
  MoeLayer,
  uniformAssignment,
  type MoeForwardOptions,
  type MoeLayerConfig,
  type MoeLayerOutput,
} from './moe-layer.js';
export {
  DecoderLM,
  createModel,
  type DecoderBlock,
  type ForwardOptions,
  type LMOutput,
  type MoeBlockReport,
} from './decoder.js';
export {
  PRESET_SIZES,
  PRESET_VARIANTS,
  presetConfig,
  type PresetOptions,
  type PresetSize,
  type PresetVariant,
} from './presets.js';
export {
  countModelFlops,
  countModelParameters,
  ffnShare,
  type FlopCounts,
  type ParameterCounts,
} from './accounting.js';
export { fromHfConfig, officialCompatibility, toHfConfig, type HfMoeppConfig } from './io/hf-config.js';
export {
  CheckpointError,
  decodeSafetensors,
  encodeSafetensors,
  readSafetensorsFile,
  writeSafetensorsFile,
  type DecodedSafetensors,
  type DecodedTensor,
  type SafetensorsDtype,
  type SafetensorsInput,
  type WritableSafetensorsDtype,
} from './io/safetensors.js';
export {
  sampleToken,
  samplingProbabilities,
  type GreedyOptions,
  type SampleOptions,
  type SamplingOptions,
} from './sampling.js';
export { upcycle, type UpcycleSettings } from './upcycle.js';
export { addExperts, expertIndexMap, selectTrainable, type ExpertGrowth, type TrainableSpec } from './grow.js';
export {
  MoeppLayer,
  type MoeppLayerArgs,
  type MoeppLayerOptions,
  type MoeppLayerSettings,
} from './layers-adapter.js';
export {
  CHECKPOINT_FORMAT_VERSION,
  assignModelWeights,
  exportCheckpoint,
  fromTorchLayout,
  importCheckpoint,
  matchModelWeights,
  modelToSafetensors,
  toTorchLayout,
  torchShape,
  type ExportCheckpointOptions,
  type MatchModelWeightsOptions,
  type ModelWeight,
} from './io/hf-checkpoint.js';
export {
  previousFolderPath,
  replaceFolderAtomically,
  syncDirectory,
  writeFileAtomically,
  writeFileSynced,
} from './io/atomic.js';
export { generate, type GenerateOptions, type GenerateResult } from './generate.js';
