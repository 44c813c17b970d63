/**
 * The common corpus record and the held-out (validation) split.
 */
import { ConfigError, checkNumber, describe } from '@moepp/tensors-core';

/** One document of a corpus: a file, a chapter, an address. */
export interface CorpusDocument {
  /** A stable identifier, unique within the corpus (usually the file name without extension). */
  readonly id: string;
  /** A human-readable title, where the source has one. */
  readonly title?: string;
  /** The year the text was written or delivered, where known. */
  readonly year?: number;
  /** The text, exactly as read (a leading UTF-8 byte-order mark removed). */
  readonly text: string;
}

/**
 * How to choose the held-out (validation) documents of a corpus.
 *
 * - `years`: documents whose `year` is listed;
 * - `yearRange`: documents with `from <= year <= to`;
 * - `everyNth`: documents at 0-based positions `every - 1`, `2·every - 1`, … (one in `every`, spread
 *   over the whole corpus, e.g. over all Brown genres);
 * - `tail`: the last `fraction` of the corpus's characters; the document the cut falls in is split in
 *   two at the first whitespace at or after the cut (pieces get ids `<id>#head` / `<id>#tail` and keep the
 *   original's other fields).
 */
export type HeldOutRule =
  | {
      /** Hold out the documents of the listed years. */
      readonly kind: 'years';
      /** The years (every document needs a `year`). */
      readonly years: readonly number[];
    }
  | {
      /** Hold out the documents of a range of years. */
      readonly kind: 'yearRange';
      /** First held-out year (inclusive). */
      readonly from: number;
      /** Last held-out year (inclusive). */
      readonly to: number;
    }
  | {
      /** Hold out one document in `every`. */
      readonly kind: 'everyNth';
      /** n >= 2: documents at 0-based positions n − 1, 2n − 1, … are held out. */
      readonly every: number;
    }
  | {
      /** Hold out the end of the corpus. */
      readonly kind: 'tail';
      /** The held-out share of the characters, in (0, 0.5]. */
      readonly fraction: number;
    };

/** A text corpus with its provenance. */
export interface Corpus<D extends CorpusDocument = CorpusDocument> {
  /** A short name: `'sotu'`, `'moby-dick'`, `'brown'`, or the path of a text folder. */
  readonly name: string;
  /** The documents, in a fixed order (by year, chapter or sorted file name). */
  readonly documents: readonly D[];
  /** Who made the text and where it comes from, including any notice the source asks to keep. */
  readonly credits: string;
  /** The licence or copyright status of the text. */
  readonly licence: string;
  /** The corpus's documented default held-out rule (see {@link splitCorpus}). */
  readonly heldOut: HeldOutRule;
}

/** A corpus divided into training and held-out documents. */
export interface CorpusSplit<D extends CorpusDocument = CorpusDocument> {
  /** Documents to train on (tokenizer and model), in corpus order. */
  readonly train: readonly D[];
  /** Held-out documents, in corpus order. */
  readonly validation: readonly D[];
  /** The rule used. */
  readonly rule: HeldOutRule;
}

/**
 * Splits a corpus into training and held-out documents. Deterministic: the same corpus and rule give
 * the same split, and no document (or piece of one) is in both parts.
 *
 * @param corpus - the corpus
 * @param rule - the held-out rule; default the corpus's own `heldOut`
 * @returns the split, both parts in corpus order
 * @throws `ConfigError` if the rule is malformed or leaves either part empty
 */
export function splitCorpus<D extends CorpusDocument>(corpus: Corpus<D>, rule: HeldOutRule = corpus.heldOut): CorpusSplit<D> {
  const op = 'splitCorpus';
  const documents = corpus.documents;
  let train: D[];
  let validation: D[];
  switch (rule?.kind) {
    case 'years':
    case 'yearRange': {
      let heldOut: (year: number) => boolean;
      if (rule.kind === 'years') {
        if (!Array.isArray(rule.years) || rule.years.length === 0) {
          throw new ConfigError(`${op}: 'years' must be a non-empty array of years, got ${describe(rule.years)}`);
        }
        rule.years.forEach((y, i) => checkNumber(op, `years[${i}]`, y, { integer: true }));
        const years = new Set(rule.years);
        heldOut = (year) => years.has(year);
      } else {
        const from = checkNumber(op, 'from', rule.from, { integer: true });
        const to = checkNumber(op, 'to', rule.to, { integer: true, min: from });
        heldOut = (year) => year >= from && year <= to;
      }
      const undated = documents.find((d) => d.year === undefined);
      if (undated !== undefined) {
        throw new ConfigError(`${op}: a '${rule.kind}' rule needs a year on every document; '${undated.id}' of corpus '${corpus.name}' has none`);
      }
      train = documents.filter((d) => !heldOut(d.year as number));
      validation = documents.filter((d) => heldOut(d.year as number));
      break;
    }
    case 'everyNth': {
      const every = checkNumber(op, 'every', rule.every, { integer: true, min: 2 });
      train = documents.filter((_, i) => i % every !== every - 1);
      validation = documents.filter((_, i) => i % every === every - 1);
      break;
    }
    case 'tail': {
      const fraction = checkNumber(op, 'fraction', rule.fraction, { greaterThan: 0, max: 0.5 });
      [train, validation] = splitTail(documents, fraction);
      break;
    }
    default:
      throw new ConfigError(`${op}: 'rule.kind' must be one of 'years', 'yearRange', 'everyNth', 'tail', got ${describe(rule)}`);
  }
  if (validation.length === 0 || train.length === 0) {
    throw new ConfigError(
      `${op}: rule ${describe(rule)} leaves ${train.length} training and ${validation.length} held-out documents of corpus '${corpus.name}' (${documents.length} documents); both must be non-empty`,
    );
  }
  return { train, validation, rule };
}

function splitTail<D extends CorpusDocument>(documents: readonly D[], fraction: number): [D[], D[]] {
  const total = documents.reduce((sum, d) => sum + d.text.length, 0);
  let cut = Math.floor(total * (1 - fraction)); // first held-out character, counted over all documents
  const train: D[] = [];
  const validation: D[] = [];
  for (const doc of documents) {
    const length = doc.text.length;
    if (cut >= length) {
      train.push(doc);
      cut -= length;
    } else if (cut <= 0) {
      validation.push(doc);
    } else {
      const at = cutPoint(doc.text, cut);
      if (at >= length) train.push(doc);
      else {
        train.push({ ...doc, id: `${doc.id}#head`, text: doc.text.slice(0, at) });
        validation.push({ ...doc, id: `${doc.id}#tail`, text: doc.text.slice(at) });
      }
      cut = 0;
    }
  }
  return [train, validation];
}

/** The first whitespace at or after `from` (never between the halves of a surrogate pair). */
function cutPoint(text: string, from: number): number {
  const match = /\s/g;
  match.lastIndex = from;
  const found = match.exec(text);
  return found === null ? text.length : found.index;
}

/**
 * Describes a split in one line, e.g. for a training log.
 *
 * @param split - a split from {@link splitCorpus}
 * @returns e.g. `"train 223 documents (10,391,516 chars), validation 10 documents (368,526 chars), rule yearRange 2012–2021"`
 */
export function describeSplit(split: CorpusSplit): string {
  const chars = (docs: readonly CorpusDocument[]): string => docs.reduce((s, d) => s + d.text.length, 0).toLocaleString('en-US');
  const rule = split.rule;
  const ruleText =
    rule.kind === 'years'
      ? `years ${rule.years.join(', ')}`
      : rule.kind === 'yearRange'
        ? `yearRange ${rule.from}–${rule.to}`
        : rule.kind === 'everyNth'
          ? `everyNth ${rule.every}`
          : `tail ${rule.fraction}`;
  return `train ${split.train.length} documents (${chars(split.train)} chars), validation ${split.validation.length} documents (${chars(split.validation)} chars), rule ${ruleText}`;
}

/**
 * Removes a leading UTF-8 byte-order mark (U+FEFF); nothing else of the text is changed.
 *
 * @param text - text as read from a file
 * @returns the text without a leading BOM
 */
export function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
