import { expect, it } from 'vitest';
import { runUpcycling } from './upcycling.js';

it('upcycling to MoE++ with zero experts starts at the dense loss and keeps improving; the full layout recovers (quick mode)', async () => {
  const result = await runUpcycling({ quick: true, seed: 0 });
  const [zeroOnly, full, dense] = result.runs;
  expect(result.densePretrainLosses[0]).toBeGreaterThan(result.denseLoss + 1); // the dense model learned something first

  // Identical FFN experts + the official gate rule: exactly the dense function at step 0.
  expect(zeroOnly!.steps[0]).toBe(0);
  expect(Math.abs(zeroOnly!.validationLosses[0]! - result.denseLoss)).toBeLessThan(1e-4);
  // Keeps improving: every evaluation lower than the one before.
  zeroOnly!.validationLosses.slice(1).forEach((loss, i) => expect(loss).toBeLessThan(zeroOnly!.validationLosses[i]!));
  // Tokens do use the zero expert: fewer than 2 FFN experts per token.
  expect(zeroOnly!.ffnExpertsPerToken).toBeGreaterThan(1);
  expect(zeroOnly!.ffnExpertsPerToken).toBeLessThan(2);

  // Copy and constant experts change the function, so the full layout starts above the dense loss, then improves.
  expect(full!.validationLosses[0]!).toBeGreaterThan(result.denseLoss);
  expect(full!.validationLosses.at(-1)!).toBeLessThan(full!.validationLosses[0]!);
  expect(full!.validationLosses.at(-1)!).toBeLessThan(result.denseLoss);

  // The dense baseline trained on for the same steps also starts at the dense loss.
  expect(dense!.experts).toBeNull();
  expect(dense!.validationLosses[0]).toBeCloseTo(result.denseLoss, 5);
});
