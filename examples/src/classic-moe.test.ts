import { expect, it } from 'vitest';
import { runClassicMoe } from './classic-moe.js';

it('the gated mixture of three biased experts beats every expert on its own (quick mode, seed 0)', async () => {
  const result = await runClassicMoe({ quick: true, seed: 0 });
  expect(result.expertAccuracies).toHaveLength(3);
  for (const accuracy of result.expertAccuracies) {
    // An expert never predicts the label it was not trained on (about a third of the test set) ...
    expect(accuracy).toBeLessThan(0.7);
    // ... and the mixture does clearly better than each of them.
    expect(result.mixtureAccuracy).toBeGreaterThan(accuracy + 0.05);
  }
  // Rows of the gate table are probabilities.
  for (const row of result.gateByLabel) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
});
