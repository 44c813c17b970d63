/**
 * Shared vitest settings for every workspace. Each workspace's `vitest.config.ts` merges this.
 *
 * - Tests run on `src/` through the `source` export condition (no build step).
 * - Besides the console reporter, every run writes `test-results.json` (vitest's JSON reporter)
 *   in the workspace folder; `.ci/run` adds them up into one `N passed, N failed` line.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export const sharedConfig = defineConfig({
  resolve: { conditions: ['source', 'import', 'module', 'node', 'default'] },
  ssr: { resolve: { conditions: ['source', 'import', 'module', 'node', 'default'], externalConditions: ['source'] } },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    reporters: ['default', ['json', { outputFile: 'test-results.json' }]],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    setupFiles: [fileURLToPath(new URL('./vitest.setup.ts', import.meta.url))],
  },
});
