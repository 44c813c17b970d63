/**
 * Error types and argument checks shared by every package of the kit.
 *
 * Every message names the op, the argument, what was expected and what was given, as tfjs's own ops do:
 * `moeLayer: argument 'x' must have shape [N, 64], got [32, 48]`.
 */

/** Thrown when a tensor argument has the wrong rank, shape or dtype. */
export class ShapeError extends Error {
  override readonly name = 'ShapeError';
}

/** Thrown when a config field or number argument is missing, of the wrong type or out of range. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Anything with a shape and a dtype: a `tf.Tensor`, or a plain record describing one. */
export interface ShapedLike {
  readonly shape: readonly number[];
  readonly dtype?: string;
}

/**
 * One expected dimension: a number that must match exactly, `null` for any size, or a string
 * name (`'N'`) that must take the same value everywhere it appears in one {@link checkShapes} call.
 */
export type DimSpec = number | null | string;

function formatShape(shape: readonly (number | null | string)[]): string {
  return `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
}

/**
 * Checks one tensor's shape (and optionally dtype).
 *
 * @param op - the public op or component being called, e.g. `'topKRouter'`
 * @param argument - the argument's name, e.g. `'x'`
 * @param tensor - the tensor to check
 * @param expected - one {@link DimSpec} per dimension; named dimensions are bound on first use
 * @param dtype - the required dtype, if any
 * @param bindings - named-dimension values already bound (shared across calls by {@link checkShapes})
 * @returns the bindings, with any new names bound
 * @throws {@link ShapeError} naming the op, the argument, the expected and the actual shape
 */
export function checkShape(
  op: string,
  argument: string,
  tensor: ShapedLike,
  expected: readonly DimSpec[],
  dtype?: string,
  bindings: Map<string, number> = new Map(),
): Map<string, number> {
  const actual = tensor.shape;
  const resolved = expected.map((d) => (typeof d === 'string' && bindings.has(d) ? (bindings.get(d) as number) : d));
  const fail = (why: string): never => {
    throw new ShapeError(
      `${op}: argument '${argument}' must have shape ${formatShape(resolved)}${dtype ? ` and dtype ${dtype}` : ''}, got ${formatShape(actual)}${tensor.dtype ? ` ${tensor.dtype}` : ''}${why ? ` (${why})` : ''}`,
    );
  };
  if (actual.length !== expected.length) fail(`rank ${expected.length} expected, got rank ${actual.length}`);
  expected.forEach((spec, axis) => {
    const size = actual[axis] as number;
    if (spec === null) return;
    if (typeof spec === 'number') {
      if (size !== spec) fail(`axis ${axis}`);
      return;
    }
    const bound = bindings.get(spec);
    if (bound === undefined) bindings.set(spec, size);
    else if (bound !== size) fail(`dimension ${spec} is ${bound} elsewhere, ${size} on axis ${axis}`);
  });
  if (dtype !== undefined && tensor.dtype !== undefined && tensor.dtype !== dtype) fail(`dtype ${dtype} expected`);
  return bindings;
}

/**
 * Checks several tensors at once with shared named dimensions, e.g.
 * `checkShapes('moe', { x: [x, ['N', 'D']], indices: [idx, ['N', 'K'], 'int32'] })`.
 *
 * @param op - the op name used in errors
 * @param specs - per argument name: the tensor, its expected dims and an optional dtype
 * @returns the value each named dimension took
 * @throws {@link ShapeError} on the first mismatch
 */
export function checkShapes(
  op: string,
  specs: Record<string, readonly [ShapedLike, readonly DimSpec[], string?]>,
): Map<string, number> {
  const bindings = new Map<string, number>();
  for (const [name, [tensor, dims, dtype]] of Object.entries(specs)) checkShape(op, name, tensor, dims, dtype, bindings);
  return bindings;
}

/** Options for {@link checkNumber}. */
export interface NumberRule {
  /** Inclusive lower bound. */
  readonly min?: number;
  /** Exclusive lower bound. */
  readonly greaterThan?: number;
  /** Inclusive upper bound. */
  readonly max?: number;
  /** Require a whole number. */
  readonly integer?: boolean;
}

/**
 * Validates a number explicitly: `0` is a value, never "unset" (a bug Tutel once had with capacity factors).
 *
 * @param op - the op or config being checked
 * @param argument - the field name
 * @param value - the value given
 * @param rule - bounds and integrality
 * @returns the value, typed as a number
 * @throws {@link ConfigError} if it is not a finite number or breaks a bound
 */
export function checkNumber(op: string, argument: string, value: unknown, rule: NumberRule = {}): number {
  const expected: string[] = [];
  if (rule.integer) expected.push('an integer');
  else expected.push('a finite number');
  if (rule.min !== undefined) expected.push(`>= ${rule.min}`);
  if (rule.greaterThan !== undefined) expected.push(`> ${rule.greaterThan}`);
  if (rule.max !== undefined) expected.push(`<= ${rule.max}`);
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (!rule.integer || Number.isInteger(value)) &&
    (rule.min === undefined || value >= rule.min) &&
    (rule.greaterThan === undefined || value > rule.greaterThan) &&
    (rule.max === undefined || value <= rule.max);
  if (!ok) {
    throw new ConfigError(`${op}: '${argument}' must be ${expected.join(' ')}, got ${describe(value)}`);
  }
  return value as number;
}

/**
 * Checks that a value is one of a fixed set of strings.
 *
 * @param op - the op or config being checked
 * @param argument - the field name
 * @param value - the value given
 * @param allowed - the accepted values
 * @returns the value, narrowed to the allowed union
 * @throws {@link ConfigError} listing the accepted values
 */
export function checkOneOf<const T extends string>(op: string, argument: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw new ConfigError(`${op}: '${argument}' must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describe(value)}`);
  }
  return value as T;
}

/** A short, readable rendering of a bad value for error messages. */
export function describe(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  if (value === undefined) return 'undefined';
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  try {
    const json = JSON.stringify(value);
    return json.length > 80 ? `${json.slice(0, 77)}...` : json;
  } catch {
    return typeof value;
  }
}
