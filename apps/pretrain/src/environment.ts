/** The machine, Node and backend of a run, for report headers. */
import { cpus, totalmem } from 'node:os';
import type { RunEnvironment } from './results.js';

/**
 * @param backendSummary - `initBackend(...).summary`
 * @returns the run's environment record
 */
export function describeEnvironment(backendSummary: string): RunEnvironment {
  const cores = cpus();
  return {
    date: new Date().toISOString(),
    backend: backendSummary,
    machine: `${cores[0]?.model.trim() ?? 'unknown CPU'}, ${cores.length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    node: process.version,
  };
}
