/**
 * The part of `cli-progress` 3.12 (https://github.com/npkg/cli-progress) the trainer uses. Declared here
 * because `@types/cli-progress` is not installed in this workspace; if it gets installed, this file can go.
 */
declare module 'cli-progress' {
  import type { EventEmitter } from 'node:events';

  namespace cliProgress {
    /** Bar options (a subset). */
    interface Options {
      format?: string;
      stream?: NodeJS.WritableStream;
      noTTYOutput?: boolean;
      notTTYSchedule?: number;
      hideCursor?: boolean;
      clearOnComplete?: boolean;
      stopOnComplete?: boolean;
      gracefulExit?: boolean;
      barsize?: number;
      fps?: number;
      etaBuffer?: number;
      autopadding?: boolean;
      linewrap?: boolean;
    }

    /** A preset: format and bar characters. */
    interface Preset {
      format?: string;
      barCompleteChar?: string;
      barIncompleteChar?: string;
    }

    /** One bar of a {@link MultiBar}. */
    class GenericBar extends EventEmitter {
      update(value: number, payload?: Record<string, unknown>): void;
      increment(step?: number, payload?: Record<string, unknown>): void;
      setTotal(total: number): void;
      getTotal(): number;
      stop(): void;
    }

    /** A set of bars with a log area above them. */
    class MultiBar extends EventEmitter {
      constructor(options: Options, preset?: Preset);
      create(total: number, startValue: number, payload?: Record<string, unknown>, barOptions?: Options): GenericBar;
      remove(bar: GenericBar): boolean;
      /** Queues text (end it with a newline) to print above the bars at the next redraw. */
      log(text: string): void;
      /** Redraws now (and flushes the log buffer). */
      update(): void;
      stop(): void;
    }

    const Presets: {
      readonly legacy: Preset;
      readonly shades_classic: Preset;
      readonly shades_grey: Preset;
      readonly rect: Preset;
    };
  }

  export = cliProgress;
}
