/**
 * A one-shot signal that many waiters can check without awaiting: `done` is readable
 * synchronously, so a reply queue can tell in O(1) whether its head may be written.
 *
 * @example
 * ```ts
 * const gate = new Gate();
 * gate.promise.then(() => console.log("open"));
 * gate.open();
 * ```
 * @module
 */

/** Opens once; `promise` resolves when it does. */
export class Gate {
  /** True once opened. */
  done = false;
  /** Resolves when the gate opens. */
  readonly promise: Promise<void>;
  #resolve!: () => void;

  constructor() {
    this.promise = new Promise((resolve) => (this.#resolve = resolve));
  }

  /** Opens the gate; later calls do nothing. */
  open(): void {
    if (this.done) return;
    this.done = true;
    this.#resolve();
  }
}
