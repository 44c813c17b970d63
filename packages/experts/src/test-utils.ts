/**
 * Test-only helpers (excluded from the build by tsconfig.build.json). The gradient check lives in
 * `@moepp/tensors-core/testing`; it is re-exported here so the tests import from one place.
 */
export { checkVariableGradients, setVariable } from '@moepp/tensors-core/testing';
