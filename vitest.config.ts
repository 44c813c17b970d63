/** Runs every workspace's tests in one vitest process: `npx vitest run` (npm test goes through turbo). */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: ['packages/*', 'apps/*', 'benchmarks', 'examples'],
  },
});
