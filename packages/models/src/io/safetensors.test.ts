import { mkdtemp, open, readdir, readFile, rm, stat, writeFile, mkdir, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SeededRandom } from '@moepp/tensors-core';
import {
  CheckpointError,
  decodeSafetensors,
  encodeSafetensors,
  readSafetensorsFile,
  writeSafetensorsFile,
  type DecodedSafetensors,
  type SafetensorsInput,
} from './safetensors.js';

const FLOAT_DTYPES = new Set(['F64', 'F32', 'F16', 'BF16']);

/** Builds a file by hand: 8-byte LE length, the header (JSON-encoded unless already a string), the data. */
function buildFile(header: unknown, data: ArrayLike<number> = [], options: { declaredLength?: bigint } = {}): Uint8Array {
  const headerBytes = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + headerBytes.length + data.length);
  new DataView(out.buffer).setBigUint64(0, options.declaredLength ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(Array.from(data), 8 + headerBytes.length);
  return out;
}

/** Little-endian bytes of 16-bit words. */
function words16(values: number[]): number[] {
  return values.flatMap((v) => [v & 0xff, (v >> 8) & 0xff]);
}

function bytesOf(array: Float32Array | Int32Array | Float64Array | BigInt64Array): number[] {
  return Array.from(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
}

/** Decodes and expects a CheckpointError whose message matches every pattern. */
function expectDecodeError(bytes: Uint8Array, ...patterns: RegExp[]): void {
  let caught: unknown;
  try {
    decodeSafetensors(bytes, 'fixture.safetensors');
  } catch (error) {
    caught = error;
  }
  expect(caught, 'decode should have thrown').toBeInstanceOf(CheckpointError);
  const message = (caught as Error).message;
  expect(message).toContain("safetensors 'fixture.safetensors'");
  for (const pattern of patterns) expect(message).toMatch(pattern);
}

/** One F32 tensor `[2]` at [0, 8] plus whatever the test puts in the entry. */
function oneTensor(entry: Record<string, unknown>, data: ArrayLike<number> = bytesOf(new Float32Array([1, 2]))): Uint8Array {
  return buildFile({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 8], ...entry } }, data);
}

/** A decoded result is structurally valid: sizes match shapes, arrays match dtypes, metadata is strings. */
function structuralProblem(result: DecodedSafetensors): string | undefined {
  for (const [name, tensor] of result.tensors) {
    const size = tensor.shape.reduce((a, b) => a * b, 1);
    if (!tensor.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return `${name}: bad shape ${tensor.shape}`;
    if (tensor.data.length !== size) return `${name}: ${tensor.data.length} elements for shape [${tensor.shape}]`;
    const wanted = FLOAT_DTYPES.has(tensor.dtype) ? Float32Array : Int32Array;
    if (!(tensor.data instanceof wanted)) return `${name}: ${tensor.dtype} decoded to ${tensor.data.constructor.name}`;
  }
  for (const [key, value] of Object.entries(result.metadata)) if (typeof value !== 'string') return `metadata ${key}`;
  return undefined;
}

/** Decodes; returns undefined when the outcome is acceptable (valid result or CheckpointError). */
function fuzzOutcome(bytes: Uint8Array): string | undefined {
  try {
    return structuralProblem(decodeSafetensors(bytes, 'fuzz'));
  } catch (error) {
    return error instanceof CheckpointError ? undefined : `${(error as Error)?.constructor?.name}: ${(error as Error)?.message}`;
  }
}

/** A valid file exercising every dtype and metadata. */
const valid = buildFile(
  {
    __metadata__: { format: 'pt' },
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    b: { dtype: 'BF16', shape: [2], data_offsets: [8, 12] },
    c: { dtype: 'F16', shape: [1, 2], data_offsets: [12, 16] },
    d: { dtype: 'I64', shape: [1], data_offsets: [16, 24] },
    e: { dtype: 'BOOL', shape: [2], data_offsets: [24, 26] },
    f: { dtype: 'U8', shape: [1], data_offsets: [26, 27] },
    g: { dtype: 'I32', shape: [1], data_offsets: [27, 31] },
    h: { dtype: 'F64', shape: [1], data_offsets: [31, 39] },
  },
  [
    ...bytesOf(new Float32Array([1, 2])),
    ...words16([0x3f80, 0xc020]),
    ...words16([0x3c00, 0x7bff]),
    ...bytesOf(new BigInt64Array([-7n])),
    1, 0,
    200,
    ...bytesOf(new Int32Array([-5])),
    ...bytesOf(new Float64Array([0.25])),
  ],
);
const headerEnd = 8 + Number(new DataView(valid.buffer).getBigUint64(0, true));

describe('encodeSafetensors / decodeSafetensors', () => {
  it('writes a known one-tensor file byte for byte', () => {
    const bytes = encodeSafetensors({ a: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } });
    // {"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} is 54 bytes; padded with 2 spaces to 56.
    const header = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  ';
    expect(header.length).toBe(56);
    const expected = [
      56, 0, 0, 0, 0, 0, 0, 0, // header length, u64 little-endian
      ...Array.from(header, (c) => c.charCodeAt(0)),
      0x00, 0x00, 0x80, 0x3f, // 1.0f little-endian
      0x00, 0x00, 0x00, 0x40, // 2.0f
    ];
    expect(Array.from(bytes)).toEqual(expected);
    expect(bytes.length).toBe(72);

    const decoded = decodeSafetensors(bytes);
    expect([...decoded.tensors.keys()]).toEqual(['a']);
    expect(decoded.tensors.get('a')).toEqual({ dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) });
    expect(decoded.metadata).toEqual({});
  });

  it('writes an empty checkpoint as a padded {} header', () => {
    const bytes = encodeSafetensors({});
    expect(Array.from(bytes)).toEqual([8, 0, 0, 0, 0, 0, 0, 0, ...Array.from('{}      ', (c) => c.charCodeAt(0))]);
    expect(decodeSafetensors(bytes)).toEqual({ tensors: new Map(), metadata: {} });
  });

  it('round-trips several tensors, dtypes, shapes and metadata', () => {
    const rng = new SeededRandom(3);
    const embed = Float32Array.from({ length: 5 * 3 }, () => rng.normal());
    const tensors: Record<string, SafetensorsInput> = {
      'model.embed_tokens.weight': { dtype: 'F32', shape: [5, 3], data: embed },
      'model.norm.weight': { dtype: 'F32', shape: [3], data: new Float32Array([1, -0, Number.NaN]) },
      scalar: { dtype: 'F32', shape: [], data: new Float32Array([Math.PI]) },
      empty: { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      'token_ids': { dtype: 'I32', shape: [2, 2], data: new Int32Array([0, -1, 2147483647, -2147483648]) },
      '12': { dtype: 'I32', shape: [1], data: new Int32Array([12]) },
      'ünïcødé 名前': { dtype: 'I32', shape: [1, 1, 1], data: new Int32Array([7]) },
    };
    const metadata = { format: 'pt', note: 'quotes " and \\ and\nnewlines', '': 'empty key' };
    const bytes = encodeSafetensors(tensors, metadata);
    expect((bytes[0] as number) % 8).toBe(0); // header length is a multiple of 8
    const decoded = decodeSafetensors(bytes);
    expect(decoded.metadata).toEqual(metadata);
    expect(new Set(decoded.tensors.keys())).toEqual(new Set(Object.keys(tensors)));
    for (const [name, input] of Object.entries(tensors)) {
      const output = decoded.tensors.get(name);
      expect(output?.dtype, name).toBe(input.dtype);
      expect(output?.shape, name).toEqual(input.shape);
      expect(output?.data, name).toBeInstanceOf(input.data.constructor);
      expect(bytesOf(output?.data ?? new Float32Array()), name).toEqual(bytesOf(input.data)); // bit-exact, NaN and -0 included
    }
  });

  it('handles names that are special to JavaScript objects', () => {
    const tensors = JSON.parse('{"__proto__": 1, "constructor": 2, "toString": 3}') as Record<string, number>;
    const inputs = Object.fromEntries(
      Object.entries(tensors).map(([name, value]) => [name, { dtype: 'I32', shape: [1], data: new Int32Array([value]) }]),
    ) as Record<string, SafetensorsInput>;
    expect(Object.keys(inputs)).toEqual(['__proto__', 'constructor', 'toString']);
    const decoded = decodeSafetensors(encodeSafetensors(inputs, JSON.parse('{"__proto__": "m"}') as Record<string, string>));
    expect([...decoded.tensors.keys()].sort()).toEqual(['__proto__', 'constructor', 'toString']);
    expect(decoded.tensors.get('__proto__')?.data).toEqual(new Int32Array([1]));
    expect(Object.getPrototypeOf(decoded.metadata)).toBe(Object.prototype); // no prototype pollution
    expect(Object.getOwnPropertyDescriptor(decoded.metadata, '__proto__')?.value).toBe('m');
  });

  it('is deterministic: insertion order of names and metadata keys does not change the bytes', () => {
    const a = { dtype: 'F32', shape: [1], data: new Float32Array([1]) } as const;
    const b = { dtype: 'I32', shape: [1], data: new Int32Array([2]) } as const;
    const first = encodeSafetensors({ a, b }, { x: '1', y: '2' });
    const second = encodeSafetensors({ b, a }, { y: '2', x: '1' });
    expect(Array.from(first)).toEqual(Array.from(second));
    // sorted layout: 'a' owns the first 4 data bytes
    const header = JSON.parse(new TextDecoder().decode(first.subarray(8, 8 + (first[0] as number))));
    expect(header.a.data_offsets).toEqual([0, 4]);
    expect(header.b.data_offsets).toEqual([4, 8]);
  });

  it('writes data from typed-array views with an offset, and reads from Buffers with an odd byteOffset', () => {
    const backing = new Float32Array([9, 9, 1.5, 2.5, 9]);
    const bytes = encodeSafetensors({ v: { dtype: 'F32', shape: [2], data: backing.subarray(2, 4) } });
    const pool = Buffer.alloc(bytes.length + 7, 0xee);
    pool.set(bytes, 3);
    const view = pool.subarray(3, 3 + bytes.length); // a Buffer whose data is not 4-byte aligned
    const decoded = decodeSafetensors(view);
    expect(decoded.tensors.get('v')?.data).toEqual(new Float32Array([1.5, 2.5]));
  });

  it('decodes BF16 by shifting into the top half of a float32', () => {
    const raw = [0x3f80, 0xc020, 0x477f, 0x0001, 0x7f80, 0xff80, 0x8000, 0x7fc0];
    const bytes = buildFile({ b: { dtype: 'BF16', shape: [8], data_offsets: [0, 16] } }, words16(raw));
    const tensor = decodeSafetensors(bytes).tensors.get('b');
    expect(tensor?.dtype).toBe('BF16');
    const values = Array.from(tensor?.data ?? []);
    expect(values.slice(0, 7)).toEqual([1, -2.5, 65280, 2 ** -133, Infinity, -Infinity, -0]);
    expect(Object.is(values[6], -0)).toBe(true);
    expect(Number.isNaN(values[7])).toBe(true);
  });

  it('decodes F16 known values: normals, max, subnormals, zeros, infinities, NaN', () => {
    const raw = [0x3c00, 0xc100, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x8000, 0x3555, 0x8001, 0x7e00];
    const bytes = buildFile({ h: { dtype: 'F16', shape: [2, 6], data_offsets: [0, 24] } }, words16(raw));
    const tensor = decodeSafetensors(bytes).tensors.get('h');
    expect(tensor?.shape).toEqual([2, 6]);
    const values = Array.from(tensor?.data ?? []);
    expect(values.slice(0, 11)).toEqual([
      1,
      -2.5,
      65504,
      2 ** -24, // smallest subnormal
      1023 * 2 ** -24, // largest subnormal
      2 ** -14, // smallest normal
      Infinity,
      -Infinity,
      -0,
      0.333251953125,
      -(2 ** -24),
    ]);
    expect(Object.is(values[8], -0)).toBe(true);
    expect(Number.isNaN(values[11])).toBe(true);
  });

  it('decodes all 65536 F16 bit patterns like an independent reference formula', () => {
    const all = Array.from({ length: 65536 }, (_, i) => i);
    const bytes = buildFile({ h: { dtype: 'F16', shape: [65536], data_offsets: [0, 131072] } }, words16(all));
    const data = decodeSafetensors(bytes).tensors.get('h')?.data ?? new Float32Array();
    const reference = (h: number): number => {
      const sign = h & 0x8000 ? -1 : 1;
      const exponent = (h >> 10) & 0x1f;
      const fraction = (h & 0x3ff) / 1024;
      if (exponent === 0) return sign * 2 ** -14 * fraction;
      if (exponent === 31) return fraction === 0 ? sign * Infinity : Number.NaN;
      return sign * 2 ** (exponent - 15) * (1 + fraction);
    };
    const mismatches = all.filter((h) => !Object.is(data[h], reference(h)) && !(Number.isNaN(data[h]) && Number.isNaN(reference(h))));
    expect(mismatches).toEqual([]);
  });

  it('decodes F64 (rounded to float32), I64 within int32, U8 and BOOL', () => {
    const f64 = new Float64Array([1.5, 0.1, -1e300]);
    const i64 = new BigInt64Array([-1n, 2147483647n, -2147483648n, 5n]);
    const bytes = buildFile(
      {
        __metadata__: { format: 'pt' },
        d: { dtype: 'F64', shape: [3], data_offsets: [0, 24] },
        i: { dtype: 'I64', shape: [2, 2], data_offsets: [24, 56] },
        u: { dtype: 'U8', shape: [3], data_offsets: [56, 59] },
        m: { dtype: 'BOOL', shape: [3], data_offsets: [59, 62] },
      },
      [...bytesOf(f64), ...bytesOf(i64), 0, 255, 7, 1, 0, 1],
    );
    const { tensors, metadata } = decodeSafetensors(bytes);
    expect(metadata).toEqual({ format: 'pt' });
    expect(tensors.get('d')).toEqual({ dtype: 'F64', shape: [3], data: new Float32Array([1.5, Math.fround(0.1), -Infinity]) });
    expect(tensors.get('i')).toEqual({ dtype: 'I64', shape: [2, 2], data: new Int32Array([-1, 2147483647, -2147483648, 5]) });
    expect(tensors.get('u')).toEqual({ dtype: 'U8', shape: [3], data: new Int32Array([0, 255, 7]) });
    expect(tensors.get('m')).toEqual({ dtype: 'BOOL', shape: [3], data: new Int32Array([1, 0, 1]) });
  });

  it('accepts zero-size tensors anywhere in the layout and an empty header padded with spaces', () => {
    const bytes = buildFile(
      {
        z: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
        a: { dtype: 'I32', shape: [1], data_offsets: [0, 4] },
        y: { dtype: 'BF16', shape: [3, 0], data_offsets: [0, 0] },
      },
      bytesOf(new Int32Array([42])),
    );
    const { tensors } = decodeSafetensors(bytes);
    expect(tensors.get('a')?.data).toEqual(new Int32Array([42]));
    expect(tensors.get('z')?.data).toEqual(new Float32Array(0));
    expect(tensors.get('y')?.shape).toEqual([3, 0]);
    expect(decodeSafetensors(buildFile('{}      ')).tensors.size).toBe(0);
  });
});

describe('decodeSafetensors rejects malformed files with a CheckpointError naming the file and tensor', () => {
  it('a file shorter than 8 bytes', () => {
    expectDecodeError(new Uint8Array(0), /0 bytes, shorter than the 8-byte header length/);
    expectDecodeError(new Uint8Array(7), /7 bytes/);
  });

  it('a header length larger than the file', () => {
    expectDecodeError(buildFile('{}', [], { declaredLength: 3n }).subarray(0, 9), /header length 3 bytes exceeds the 1 bytes/);
    expectDecodeError(buildFile('{}', [], { declaredLength: 0xffff_ffff_ffff_ffffn }), /header length 18446744073709551615/);
  });

  it('a header that is not UTF-8, not JSON or not an object', () => {
    const invalidUtf8 = buildFile('{"a":1}');
    invalidUtf8[10] = 0xff;
    expectDecodeError(invalidUtf8, /not valid UTF-8/);
    expectDecodeError(buildFile('{"a": '), /not valid JSON/);
    expectDecodeError(buildFile(''), /not valid JSON/);
    expectDecodeError(buildFile('\ufeff{}'), /not valid JSON/); // a byte-order mark is not allowed
    expectDecodeError(buildFile('[]'), /must be a JSON object, got \[\]/);
    expectDecodeError(buildFile('null'), /must be a JSON object, got null/);
    expectDecodeError(buildFile('"x"'), /must be a JSON object/);
  });

  it('repeated keys, which JSON.parse would silently collapse', () => {
    const data = bytesOf(new Float32Array([1, 2]));
    const entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
    expectDecodeError(buildFile(`{"w":${entry},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, data), /repeats the key 'w'/);
    expectDecodeError(buildFile(`{"w":{"dtype":"I32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, data), /repeats the key 'dtype' in 'w'/);
    // the same key spelled with an escape is the same key
    expectDecodeError(buildFile(`{"w":${entry},"\\u0077":${entry}}`, data), /repeats the key 'w'/);
    // but the same key in two different objects is fine
    const ok = `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`;
    expect(decodeSafetensors(buildFile(ok, data)).tensors.size).toBe(2);
  });

  it('malformed __metadata__', () => {
    expectDecodeError(buildFile({ __metadata__: { epoch: 3 } }), /'__metadata__' value 'epoch' must be a string, got 3/);
    expectDecodeError(buildFile({ __metadata__: ['a'] }), /'__metadata__' must be an object of strings/);
    expectDecodeError(buildFile({ __metadata__: null }), /'__metadata__' must be an object of strings/);
  });

  it('an entry that is not an object, lacks a field, has an unknown field or wrong types', () => {
    expectDecodeError(buildFile({ w: 5 }), /tensor 'w': entry must be an object/);
    expectDecodeError(oneTensor({ dtype: undefined }), /tensor 'w': entry has no 'dtype'/);
    expectDecodeError(oneTensor({ shape: undefined }), /tensor 'w': entry has no 'shape'/);
    expectDecodeError(oneTensor({ data_offsets: undefined }), /tensor 'w': entry has no 'data_offsets'/);
    expectDecodeError(oneTensor({ offsets: [0, 8] }), /tensor 'w': unknown field\(s\) 'offsets'/);
    expectDecodeError(oneTensor({ dtype: 32 }), /tensor 'w': dtype must be a string, got 32/);
    expectDecodeError(oneTensor({ shape: 2 }), /tensor 'w': shape must be an array/);
    expectDecodeError(oneTensor({ shape: '[2]' }), /tensor 'w': shape must be an array/);
    expectDecodeError(oneTensor({ data_offsets: { begin: 0, end: 8 } }), /tensor 'w': data_offsets must be \[begin, end\]/);
    expectDecodeError(oneTensor({ data_offsets: [0, 4, 8] }), /tensor 'w': data_offsets must be \[begin, end\]/);
    expectDecodeError(oneTensor({ data_offsets: [0, '8'] }), /tensor 'w': data_offsets must be two non-negative integers/);
  });

  it('an unknown dtype', () => {
    expectDecodeError(oneTensor({ dtype: 'F8_E4M3' }), /tensor 'w': unsupported dtype "F8_E4M3"; supported: F64, F32, F16, BF16, I64, I32, U8, BOOL/);
    expectDecodeError(oneTensor({ dtype: 'f32' }), /unsupported dtype "f32"/);
    expectDecodeError(oneTensor({ dtype: 'toString' }), /unsupported dtype "toString"/); // not fooled by Object.prototype
  });

  it('negative or non-integer dims', () => {
    expectDecodeError(oneTensor({ shape: [-2] }), /tensor 'w': shape\[0\] must be a non-negative integer, got -2/);
    expectDecodeError(oneTensor({ shape: [2, 1.5] }), /tensor 'w': shape\[1\] must be a non-negative integer, got 1.5/);
    expectDecodeError(oneTensor({ shape: ['2'] }), /shape\[0\] must be a non-negative integer, got "2"/);
    expectDecodeError(oneTensor({ shape: [null] }), /shape\[0\] must be a non-negative integer, got null/);
    expectDecodeError(buildFile('{"w":{"dtype":"F32","shape":[1e300],"data_offsets":[0,8]}}', bytesOf(new Float32Array([1, 2]))), /shape\[0\]/);
  });

  it('offsets that are not begin <= end inside the data section', () => {
    expectDecodeError(oneTensor({ data_offsets: [8, 0] }), /tensor 'w': data_offsets \[8, 0\] has begin > end/);
    expectDecodeError(oneTensor({ data_offsets: [0, 12] }), /tensor 'w': data_offsets \[0, 12\] extends past the data section of 8 bytes/);
    expectDecodeError(oneTensor({ data_offsets: [-4, 4] }), /tensor 'w': data_offsets must be two non-negative integers/);
    expectDecodeError(oneTensor({ data_offsets: [0.5, 8] }), /data_offsets must be two non-negative integers/);
    expectDecodeError(oneTensor({ data_offsets: [0, 2 ** 60] }), /data_offsets must be two non-negative integers/);
  });

  it('a byte length that differs from product(shape) x dtype size', () => {
    expectDecodeError(oneTensor({ shape: [3] }), /tensor 'w': shape \[3\] of F32 needs 12 bytes, but data_offsets \[0, 8\] span 8/);
    expectDecodeError(oneTensor({ dtype: 'F16' }), /shape \[2\] of F16 needs 4 bytes/);
    expectDecodeError(oneTensor({ dtype: 'I64' }), /shape \[2\] of I64 needs 16 bytes/);
    // 2^26 cubed = 2^78: a float product would round, BigInt does not
    expectDecodeError(oneTensor({ shape: [2 ** 26, 2 ** 26, 2 ** 26] }), /needs 1208925819614629174706176 bytes/);
    expectDecodeError(oneTensor({ shape: [0, 2] }), /needs 0 bytes, but data_offsets \[0, 8\] span 8/);
  });

  it('overlapping tensors, gaps and trailing bytes (strict: the data section must be covered exactly)', () => {
    const data = bytesOf(new Float32Array([1, 2, 3]));
    const f32 = (begin: number, end: number) => ({ dtype: 'F32', shape: [(end - begin) / 4], data_offsets: [begin, end] });
    expectDecodeError(buildFile({ a: f32(0, 8), b: f32(4, 12) }, data), /tensor 'b' \(bytes 4..12\) overlaps tensor 'a' \(ends at 8\)/);
    expectDecodeError(buildFile({ a: f32(0, 12), b: f32(0, 12) }, data), /overlaps/); // two names for the same bytes
    expectDecodeError(buildFile({ a: f32(0, 12), b: f32(4, 4) }, data), /tensor 'b' \(bytes 4..4\) overlaps tensor 'a'/);
    expectDecodeError(buildFile({ a: f32(0, 4), b: f32(8, 12) }, data), /gap of 4 bytes \(4..8\) before tensor 'b'/);
    expectDecodeError(buildFile({ b: f32(4, 12) }, data), /gap of 4 bytes \(0..4\) before tensor 'b'/);
    expectDecodeError(buildFile({ a: f32(0, 8) }, data), /4 trailing bytes after the last tensor/);
    expectDecodeError(buildFile({}, [0]), /1 trailing bytes after the last tensor/);
  });

  it('I64 values outside int32 and BOOL bytes other than 0 and 1', () => {
    const tooBig = bytesOf(new BigInt64Array([1n, 2147483648n]));
    expectDecodeError(buildFile({ ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, tooBig), /tensor 'ids': I64 element 1 = 2147483648 is outside the int32 range/);
    const tooSmall = bytesOf(new BigInt64Array([-2147483649n]));
    expectDecodeError(buildFile({ ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, tooSmall), /element 0 = -2147483649/);
    const huge = bytesOf(new BigInt64Array([-(2n ** 62n)]));
    expectDecodeError(buildFile({ ids: { dtype: 'I64', shape: [1], data_offsets: [0, 8] } }, huge), /element 0 = -4611686018427387904/);
    expectDecodeError(buildFile({ mask: { dtype: 'BOOL', shape: [3], data_offsets: [0, 3] } }, [1, 0, 2]), /tensor 'mask': BOOL element 2 is byte 2/);
  });
});

describe('encodeSafetensors rejects bad input with a CheckpointError naming the tensor', () => {
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['reserved name', { __metadata__: { dtype: 'F32', shape: [1], data: new Float32Array(1) } }, /'__metadata__' is reserved/],
    ['unsupported dtype', { w: { dtype: 'F16', shape: [1], data: new Float32Array(1) } }, /tensor 'w': dtype must be 'F32' or 'I32', got "F16"/],
    ['data type mismatch', { w: { dtype: 'I32', shape: [1], data: new Float32Array(1) } }, /tensor 'w': dtype I32 needs a Int32Array as data, got Float32Array/],
    ['plain array data', { w: { dtype: 'F32', shape: [1], data: [1] } }, /tensor 'w': dtype F32 needs a Float32Array as data, got Array/],
    ['length mismatch', { w: { dtype: 'F32', shape: [2, 2], data: new Float32Array(3) } }, /tensor 'w': shape \[2, 2\] has 4 elements but data has 3/],
    ['negative dim', { w: { dtype: 'F32', shape: [-1], data: new Float32Array(1) } }, /tensor 'w': shape must be an array of non-negative integers, got \[-1\]/],
    ['fractional dim', { w: { dtype: 'F32', shape: [0.5], data: new Float32Array(1) } }, /tensor 'w': shape must be/],
    ['not a tensor', { w: null }, /tensor 'w' must be \{ dtype, shape, data \}/],
  ];
  it.each(cases)('%s', (_label, tensors, pattern) => {
    expect(() => encodeSafetensors(tensors as Record<string, SafetensorsInput>)).toThrow(CheckpointError);
    expect(() => encodeSafetensors(tensors as Record<string, SafetensorsInput>)).toThrow(pattern);
  });

  it('non-string metadata', () => {
    const metadata = { step: 3 } as unknown as Record<string, string>;
    expect(() => encodeSafetensors({}, metadata)).toThrow(/metadata 'step' must be a string/);
    expect(() => encodeSafetensors({}, [] as unknown as Record<string, string>)).toThrow(CheckpointError);
  });
});

describe('decodeSafetensors fuzzing: every input decodes to a valid result or throws CheckpointError', () => {

  it('the fixture itself is valid', () => {
    const decoded = decodeSafetensors(valid);
    expect(decoded.tensors.size).toBe(8);
    expect(decoded.tensors.get('h')?.data).toEqual(new Float32Array([0.25]));
    expect(structuralProblem(decoded)).toBeUndefined();
  });

  it('300 seeded random byte strings, and 300 with a plausible length and JSON-like header', () => {
    const rng = new SeededRandom(2024);
    const failures: string[] = [];
    for (let trial = 0; trial < 300; trial++) {
      const bytes = Uint8Array.from({ length: rng.int(200) }, () => rng.int(256));
      const outcome = fuzzOutcome(bytes);
      if (outcome) failures.push(`random #${trial}: ${outcome}`);
    }
    const alphabet = '{}[]":,0123456789-. eE_adfhiopstuvwxyzFIUBOL'.split('');
    const pieces = ['"dtype"', '"shape"', '"data_offsets"', '"F32"', '"BF16"', '"I64"', '"BOOL"', '"__metadata__"', '[0,4]', '[1]', '{', '}'];
    for (let trial = 0; trial < 300; trial++) {
      let header = '';
      const length = rng.int(80);
      while (header.length < length) header += rng.next() < 0.3 ? (pieces[rng.int(pieces.length)] as string) : (alphabet[rng.int(alphabet.length)] as string);
      if (trial % 3 === 0) header = `{${header}}`;
      const data = Array.from({ length: rng.int(12) }, () => rng.int(256));
      const bytes = buildFile(header, data);
      const outcome = fuzzOutcome(bytes);
      if (outcome) failures.push(`structured #${trial} ${JSON.stringify(header)}: ${outcome}`);
    }
    expect(failures).toEqual([]);
  });

  it('truncations of a valid file at every length', () => {
    const failures: string[] = [];
    for (let length = 0; length < valid.length; length++) {
      const truncated = valid.slice(0, length);
      let caught: unknown;
      try {
        decodeSafetensors(truncated, 'fuzz');
      } catch (error) {
        caught = error;
      }
      // A truncated file is always short of data that the header promises, so it must be rejected.
      if (!(caught instanceof CheckpointError)) failures.push(`length ${length}: ${caught === undefined ? 'decoded' : String(caught)}`);
    }
    expect(failures).toEqual([]);
  });

  it('single-byte corruptions of every byte (header length, header and data)', () => {
    const rng = new SeededRandom(77);
    const failures: string[] = [];
    let rejected = 0;
    let trials = 0;
    for (let position = 0; position < valid.length; position++) {
      const values = [rng.int(256), rng.int(256), valid[position] as number ^ 0x01, 0x20, 0x22, 0x7b, 0x30];
      for (const value of values) {
        const corrupt = valid.slice();
        corrupt[position] = value;
        const outcome = fuzzOutcome(corrupt);
        trials++;
        if (outcome) failures.push(`byte ${position} = ${value}: ${outcome}`);
        try {
          decodeSafetensors(corrupt);
        } catch {
          rejected++;
        }
      }
    }
    expect(failures).toEqual([]);
    // The fuzz must actually reach the error paths: most header corruptions are rejected.
    expect(rejected).toBeGreaterThan((headerEnd - 8) * 3);
    expect(trials).toBe(valid.length * 7);
  });
});

describe('readSafetensorsFile / writeSafetensorsFile', () => {
  let directory = '';
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'moepp-safetensors-'));
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await rm(directory, { recursive: true, force: true });
  });

  const tensors = {
    w: { dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) },
    ids: { dtype: 'I32', shape: [3], data: new Int32Array([7, 8, 9]) },
  } as const;

  it('round-trips through a file and leaves only that file', async () => {
    const path = join(directory, 'model.safetensors');
    await writeSafetensorsFile(path, tensors, { format: 'pt' });
    expect(await readdir(directory)).toEqual(['model.safetensors']);
    expect(Array.from(await readFile(path))).toEqual(Array.from(encodeSafetensors(tensors, { format: 'pt' })));
    const decoded = await readSafetensorsFile(path);
    expect(decoded.metadata).toEqual({ format: 'pt' });
    expect(decoded.tensors.get('w')).toEqual({ dtype: 'F32', shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) });
    expect(decoded.tensors.get('ids')).toEqual({ dtype: 'I32', shape: [3], data: new Int32Array([7, 8, 9]) });
  });

  it('names the path when reading a missing or malformed file', async () => {
    const missing = join(directory, 'missing.safetensors');
    await expect(readSafetensorsFile(missing)).rejects.toThrow(CheckpointError);
    await expect(readSafetensorsFile(missing)).rejects.toThrow(`cannot read '${missing}'`);
    const broken = join(directory, 'broken.safetensors');
    await writeFile(broken, new Uint8Array([1, 2, 3]));
    await expect(readSafetensorsFile(broken)).rejects.toThrow(`safetensors '${broken}': file is 3 bytes`);
  });

  it('reads tensor by tensor with the same result and errors as decodeSafetensors', async () => {
    const path = join(directory, 'all-dtypes.safetensors');
    await writeFile(path, valid);
    const fromFile = await readSafetensorsFile(path);
    expect(fromFile).toEqual(decodeSafetensors(valid));
    // F32 / I32 read from the file own an exactly-sized buffer (no aliasing of a shared read buffer)
    const a = fromFile.tensors.get('a')?.data;
    expect(a?.buffer.byteLength).toBe(8);

    const failures: string[] = [];
    for (let length = 0; length < valid.length; length += 5) {
      await writeFile(path, valid.subarray(0, length));
      const fileError = await readSafetensorsFile(path).catch((e: unknown) => e);
      let memoryError: unknown;
      try {
        decodeSafetensors(valid.subarray(0, length), path);
      } catch (error) {
        memoryError = error;
      }
      if (!(fileError instanceof CheckpointError) || (fileError as Error).message !== (memoryError as Error)?.message) {
        failures.push(`length ${length}: ${String(fileError)} vs ${String(memoryError)}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it('rejects a header length above 100 MB without allocating it (sparse file)', async () => {
    const path = join(directory, 'huge-header.safetensors');
    const handle = await open(path, 'w');
    try {
      const field = new Uint8Array(8);
      new DataView(field.buffer).setBigUint64(0, 150_000_000n, true);
      await handle.write(field, 0, 8, 0);
      await handle.truncate(200_000_000); // sparse: no real disk use
    } finally {
      await handle.close();
    }
    await expect(readSafetensorsFile(path)).rejects.toThrow(/header length 150000000 bytes exceeds the limit of 100000000 bytes/);
  });

  it('a file that shrinks while being read is a CheckpointError', async () => {
    const path = join(directory, 'model.safetensors');
    await writeFile(path, valid);
    const probe = await open(path, 'r');
    const prototype = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<{ bytesRead: number }> };
    await probe.close();
    const realRead = prototype.read;
    // the length field and the header read normally; every tensor read hits end of file
    vi.spyOn(prototype, 'read').mockImplementation(async function (this: FileHandle, ...args: unknown[]) {
      const position = args[3] as number;
      if (position >= headerEnd) return { bytesRead: 0, buffer: args[0] };
      return realRead.apply(this, args);
    });
    await expect(readSafetensorsFile(path)).rejects.toThrow(new RegExp(`unexpected end of file at byte ${headerEnd} `));
  });

  it('a write into a directory that does not exist fails with CheckpointError and leaves no files', async () => {
    const path = join(directory, 'no', 'such', 'model.safetensors');
    const error = await writeSafetensorsFile(path, tensors).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CheckpointError);
    expect((error as Error).message).toContain(`cannot write '${path}'`);
    expect((error as Error).cause).toMatchObject({ code: 'ENOENT' });
    expect(await readdir(directory)).toEqual([]);
  });

  it('a rename that fails (the target is a non-empty directory) removes the temporary file', async () => {
    const path = join(directory, 'model.safetensors');
    await mkdir(path);
    await writeFile(join(path, 'keep'), 'x');
    await expect(writeSafetensorsFile(path, tensors)).rejects.toThrow(CheckpointError);
    expect(await readdir(directory)).toEqual(['model.safetensors']);
    expect(await readdir(path)).toEqual(['keep']);
  });

  it('invalid tensors are rejected before anything touches the disk', async () => {
    const path = join(directory, 'model.safetensors');
    await writeFile(path, 'old');
    const bad = { w: { dtype: 'F32', shape: [3], data: new Float32Array(2) } } as const;
    await expect(writeSafetensorsFile(path, bad)).rejects.toThrow(/shape \[3\] has 3 elements but data has 2/);
    expect(await readFile(path, 'utf8')).toBe('old');
    expect(await readdir(directory)).toEqual(['model.safetensors']);
  });

  it('a write that fails half-way leaves the existing file intact and no temporary file', async () => {
    const path = join(directory, 'model.safetensors');
    await writeSafetensorsFile(path, { old: { dtype: 'I32', shape: [1], data: new Int32Array([1]) } });
    const before = Array.from(await readFile(path));

    // Make FileHandle.write write half of what it is asked, then fail as a full disk would.
    const probe = await open(path, 'r');
    const prototype = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<{ bytesWritten: number }> };
    await probe.close();
    const realWrite = prototype.write;
    const spy = vi.spyOn(prototype, 'write').mockImplementation(async function (this: FileHandle, ...args: unknown[]) {
      const [buffer, offset, length, position] = args as [Uint8Array, number, number, number];
      await realWrite.call(this, buffer, offset, Math.floor(length / 2), position);
      throw Object.assign(new Error('ENOSPC: no space left on device (simulated)'), { code: 'ENOSPC' });
    });
    const error = await writeSafetensorsFile(path, tensors).catch((e: unknown) => e);
    expect(spy).toHaveBeenCalled();
    spy.mockRestore();

    expect(error).toBeInstanceOf(CheckpointError);
    expect((error as Error).message).toMatch(/cannot write .*model\.safetensors.*ENOSPC/);
    expect(Array.from(await readFile(path))).toEqual(before);
    expect(await readdir(directory)).toEqual(['model.safetensors']);
  });

  it('replaces an existing file by rename: a reader holding the old file still sees it complete', async () => {
    const path = join(directory, 'model.safetensors');
    await writeSafetensorsFile(path, { old: { dtype: 'I32', shape: [2], data: new Int32Array([1, 2]) } });
    const oldBytes = await readFile(path);
    const oldInode = (await stat(path)).ino;
    const reader = await open(path, 'r');
    try {
      await writeSafetensorsFile(path, tensors);
      // the name now points to a new, complete file...
      expect((await stat(path)).ino).not.toBe(oldInode);
      expect((await readSafetensorsFile(path)).tensors.get('w')?.data).toEqual(new Float32Array([1, 2, 3, 4]));
      // ...while the old one was never truncated or overwritten in place
      const seen = new Uint8Array(oldBytes.length + 16);
      const { bytesRead } = await reader.read(seen, 0, seen.length, 0);
      expect(bytesRead).toBe(oldBytes.length);
      expect(decodeSafetensors(seen.subarray(0, bytesRead)).tensors.get('old')?.data).toEqual(new Int32Array([1, 2]));
    } finally {
      await reader.close();
    }
    expect(await readdir(directory)).toEqual(['model.safetensors']);
  });
});
