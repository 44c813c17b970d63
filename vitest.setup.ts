/**
 * Runs before every test file: selects the backend tests run on (the kit's default, wasm with the
 * kernel fixes, unless MOEPP_TEST_BACKEND names another) and silences tfjs's banner.
 * Tests that compare backends switch explicitly with `tf.setBackend`.
 */
import { initBackend, type BackendChoice } from '@moepp/tensors-core';

await initBackend({ backend: (process.env.MOEPP_TEST_BACKEND as BackendChoice | undefined) ?? 'wasm' });
