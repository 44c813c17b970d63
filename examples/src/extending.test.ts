import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { randomNormal, SeededRandom, type ExpertKind } from '@moepp/tensors-core';
import { expectNoLeak, expectTensorClose } from '@moepp/tensors-core/testing';
import { disposeRouterOutput, MoEPlusPlusRouter, TopKRouter, type RouteOptions, type Router, type RouterOutput } from '@moepp/routers';
import { ConstantExpert, CopyExpert, FfnExpert, ZeroExpert, type Expert } from '@moepp/experts';
import { checkExpertContract, checkRouterContract, ContractError } from './contracts.js';
import { CosineRouter, LowRankExpert, runExtending, sparseMoeForward } from './extending.js';

const rng = () => new SeededRandom(7);

describe('the router contract', () => {
  it('holds for the example CosineRouter and for the kit’s own routers', () => {
    const routers: Router[] = [
      new CosineRouter({ dim: 8, numExperts: 5, topK: 2, rng: rng() }),
      new TopKRouter({ dim: 8, numExperts: 5, topK: 2, normalizeTopK: true, rng: rng() }),
      new MoEPlusPlusRouter({ dim: 8, numExperts: 5, topK: 2, rng: rng() }),
    ];
    for (const router of routers) {
      checkRouterContract(router, { dim: 8 });
      router.dispose();
    }
    // Switch-style raw gates do not sum to 1; the option skips only that check.
    const raw = new TopKRouter({ dim: 8, numExperts: 5, topK: 2, rng: rng() });
    expect(() => checkRouterContract(raw, { dim: 8 })).toThrow(/gates sum to 1/);
    checkRouterContract(raw, { dim: 8, gatesSumToOne: false });
    raw.dispose();
  });

  /** A CosineRouter with one thing broken, to show each check can fail. */
  function broken(breakOutput: (out: RouterOutput, x: tf.Tensor2D, options: RouteOptions) => RouterOutput, routeOptions?: (o: RouteOptions) => RouteOptions) {
    return new (class BrokenRouter extends CosineRouter {
      override route(x: tf.Tensor2D, options: RouteOptions = {}): RouterOutput {
        return breakOutput(super.route(x, routeOptions ? routeOptions(options) : options), x, options);
      }
    })({ dim: 8, numExperts: 5, topK: 2, rng: rng() });
  }

  it.each([
    ['a leaked tensor', 'no leak', broken((out) => (tf.scalar(1), out))],
    ['gates that do not sum to 1', 'gates sum to 1', broken((out) => {
      const halved = tf.mul(out.combineWeights, 0.5) as tf.Tensor2D;
      out.combineWeights.dispose();
      return { ...out, combineWeights: halved };
    })],
    ['padding that is routed', 'padding', broken((out) => out, ({ tokenMask: _ignored, ...rest }) => rest)],
    [
      'a keep mask on the gradient tape',
      'backward',
      broken((out) => {
        const onTape = tf.tidy(() => tf.add(tf.mul(out.combineWeights, 0), out.keepMask) as tf.Tensor2D); // depends on the gates
        out.keepMask.dispose();
        return { ...out, keepMask: onTape };
      }),
    ],
  ])('fails for %s', (_what, check, router) => {
    tf.engine().startScope(); // the broken routers leave tensors behind on purpose
    try {
      expect(() => checkRouterContract(router, { dim: 8 })).toThrow(ContractError);
      expect(() => checkRouterContract(router, { dim: 8 })).toThrow(new RegExp(`BrokenRouter: ${check}`));
    } finally {
      tf.engine().endScope();
      router.dispose();
    }
  });
});

describe('the expert contract', () => {
  it('holds for the example LowRankExpert and for the kit’s own experts', () => {
    const experts: Expert[] = [
      new LowRankExpert({ dim: 8, rank: 3, rng: rng() }),
      new FfnExpert({ dim: 8, ffnDim: 16, rng: rng() }),
      new ConstantExpert({ dim: 8, rng: rng() }),
      new CopyExpert({ dim: 8 }),
      new ZeroExpert({ dim: 8 }),
    ];
    for (const expert of experts) checkExpertContract(expert); // disposes each
  });

  it('fails for an expert that mixes tokens or miscounts its parameters', () => {
    class BatchMeanExpert extends LowRankExpert {
      override apply(x: tf.Tensor2D): tf.Tensor2D {
        return tf.tidy(() => tf.sub(super.apply(x), tf.mean(x, 0, true)) as tf.Tensor2D);
      }
    }
    const mixing = new BatchMeanExpert({ dim: 8, rank: 3, rng: rng() });
    expect(() => checkExpertContract(mixing)).toThrow(/per token/);
    mixing.dispose();
    class Miscounted extends LowRankExpert {
      override parameterCount(): number {
        return 0;
      }
    }
    const miscounted = new Miscounted({ dim: 8, rank: 3, rng: rng() });
    expect(() => checkExpertContract(miscounted)).toThrow(/parameterCount/);
    miscounted.dispose();
  });
});

describe('sparseMoeForward', () => {
  it('with one expert and top-1 equals that expert (gates are 1), and with only a zero expert outputs zeros', async () => {
    const x = randomNormal([6, 8], rng()) as tf.Tensor2D;
    const expert = new LowRankExpert({ dim: 8, rank: 3, rng: rng() });
    const single = new CosineRouter({ dim: 8, numExperts: 1, topK: 1, rng: rng() });
    await expectNoLeak(() => {
      const { output, routing } = sparseMoeForward(x, single, [expert]);
      tf.tidy(() => expectTensorClose(output, expert.apply(x), { atol: 1e-6 }));
      output.dispose();
      disposeRouterOutput(routing);
    });
    const kinds: ExpertKind[] = ['zero'];
    const zeroRouter = new CosineRouter({ dim: 8, numExperts: 1, topK: 1, expertKinds: kinds, rng: rng() });
    const { output, routing } = sparseMoeForward(x, zeroRouter, [new ZeroExpert({ dim: 8 })]);
    expect(Array.from(output.dataSync()).every((v) => v === 0)).toBe(true);
    expect(() => sparseMoeForward(x, single, [expert, expert])).toThrow(/routes over 1 experts, got 2/);
    tf.dispose([x, output]);
    disposeRouterOutput(routing);
    [single, zeroRouter, expert].forEach((c) => c.dispose());
  });
});

it('the example trains: the loss falls (quick mode)', async () => {
  const result = await runExtending({ quick: true, seed: 0 });
  expect(result.losses.at(-1)!).toBeLessThan(0.7 * result.losses[0]!);
  expect(result.tokensPerExpert.reduce((a, b) => a + b, 0)).toBe(2 * 256);
});
