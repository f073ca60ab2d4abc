import assert from "assert";
import * as FakeTimers from "fake-timers";
import {
  backoff,
  deadline,
  DeadlineError,
  delay,
  pause,
  retry,
  RetryError,
  within,
} from "../lib/async.ts";

/** Runs `body` with fake timers installed for its duration only. */
async function withFakeTime(
  body: (clock: ReturnType<typeof FakeTimers.install>) => Promise<void>,
): Promise<void> {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  try {
    await body(clock);
  } finally {
    clock.uninstall();
  }
}

/** Settles `p` into a tagged value without leaving a rejection unhandled. */
function settle<T>(p: Promise<T>) {
  const state: { done: boolean; value?: T; error?: unknown } = { done: false };
  p.then((v) => {
    state.done = true;
    state.value = v;
  }, (e) => {
    state.done = true;
    state.error = e;
  });
  return state;
}

Deno.test("delay() resolves after its time and not before", () =>
  withFakeTime(async (clock) => {
    const s = settle(delay(100));
    await clock.tickAsync(99);
    assert.equal(s.done, false);
    await clock.tickAsync(1);
    assert.equal(s.done, true);
    assert.equal(clock.countTimers(), 0);
  }));

Deno.test("delay() rejects with the signal's reason and clears its timer when aborted", () =>
  withFakeTime(async (clock) => {
    const ac = new AbortController();
    const s = settle(delay(1000, { signal: ac.signal }));
    ac.abort(new Error("stop"));
    await clock.tickAsync(0);
    assert.equal((s.error as Error).message, "stop");
    assert.equal(clock.countTimers(), 0);
    const pre = settle(delay(10, { signal: ac.signal }));
    await clock.tickAsync(0);
    assert.equal((pre.error as Error).message, "stop");
  }));

Deno.test("deadline() passes the value through and clears its timer", () =>
  withFakeTime(async (clock) => {
    const s = settle(deadline(Promise.resolve(7), 100));
    await clock.tickAsync(0);
    assert.equal(s.value, 7);
    assert.equal(clock.countTimers(), 0);
    const failed = settle(deadline(Promise.reject(new Error("no")), 100));
    await clock.tickAsync(0);
    assert.equal((failed.error as Error).message, "no");
    assert.equal(clock.countTimers(), 0);
  }));

Deno.test("deadline() rejects with DeadlineError naming the time when it passes", () =>
  withFakeTime(async (clock) => {
    const s = settle(deadline(new Promise<never>(() => {}), 250));
    await clock.tickAsync(249);
    assert.equal(s.done, false);
    await clock.tickAsync(1);
    assert.ok(s.error instanceof DeadlineError);
    assert.equal((s.error as DeadlineError).ms, 250);
    assert.equal((s.error as Error).message, "no answer within 250 ms");
  }));

Deno.test("within() gives the fallback for a late promise and the value for a timely one", () =>
  withFakeTime(async (clock) => {
    const late = settle(within(new Promise<number>(() => {}), 10, () => -1));
    const timely = settle(within(Promise.resolve(3), 10, () => -1));
    await clock.tickAsync(10);
    assert.equal(late.value, -1);
    assert.equal(timely.value, 3);
  }));

Deno.test("backoff() doubles from minTimeout up to maxTimeout, jittered within the cap", () => {
  const exact = { jitter: 0, minTimeout: 50, maxTimeout: 1000 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6].map((a) => backoff(a, exact)),
    [50, 100, 200, 400, 800, 1000, 1000],
  );
  assert.equal(backoff(3, { random: () => 0.5 }), 200);
  assert.equal(backoff(3, { random: () => 0 }), 400);
});

Deno.test("retry() retries with backoff until fn resolves", () =>
  withFakeTime(async (clock) => {
    const calls: number[] = [];
    const s = settle(retry((attempt) => {
      calls.push(attempt);
      return attempt < 2
        ? Promise.reject(new Error("again"))
        : Promise.resolve("ok");
    }, { jitter: 0, minTimeout: 10 }));
    await clock.tickAsync(9);
    assert.deepEqual(calls, [0]);
    await clock.tickAsync(1);
    assert.deepEqual(calls, [0, 1]);
    await clock.tickAsync(20);
    assert.deepEqual(calls, [0, 1, 2]);
    assert.equal(s.value, "ok");
  }));

Deno.test("retry() gives up after maxAttempts with a RetryError holding the last error", () =>
  withFakeTime(async (clock) => {
    let n = 0;
    const s = settle(retry(() => Promise.reject(new Error(`fail ${++n}`)), {
      maxAttempts: 3,
      jitter: 0,
      minTimeout: 1,
    }));
    await clock.tickAsync(100);
    assert.ok(s.error instanceof RetryError);
    assert.equal((s.error as RetryError).attempts, 3);
    assert.equal(((s.error as Error).cause as Error).message, "fail 3");
  }));

Deno.test("retry() stops at once when shouldRetry says the error is fatal", async () => {
  let n = 0;
  await assert.rejects(
    retry(() => {
      n++;
      return Promise.reject(new TypeError("fatal"));
    }, { shouldRetry: (e) => !(e instanceof TypeError) }),
    TypeError,
  );
  assert.equal(n, 1);
});

Deno.test("retry() stops waiting when its signal aborts", () =>
  withFakeTime(async (clock) => {
    const ac = new AbortController();
    const s = settle(retry(() => Promise.reject(new Error("x")), {
      signal: ac.signal,
      minTimeout: 1000,
      jitter: 0,
    }));
    await clock.tickAsync(10);
    ac.abort(new Error("stopped"));
    await clock.tickAsync(0);
    assert.equal((s.error as Error).message, "stopped");
    assert.equal(clock.countTimers(), 0);
  }));

Deno.test("pause() resolves after its time, or at once (never rejecting) when its signal aborts", () =>
  withFakeTime(async (clock) => {
    const ac = new AbortController();
    const timed = settle(pause(100, new AbortController().signal));
    const cut = settle(pause(100_000, ac.signal));
    await clock.tickAsync(99);
    assert.equal(timed.done, false);
    await clock.tickAsync(1);
    assert.equal(timed.done, true);
    assert.equal(cut.done, false);
    ac.abort(new Error("stop"));
    await clock.tickAsync(0);
    assert.equal(cut.done, true);
    assert.equal(cut.error, undefined);
    assert.equal(clock.countTimers(), 0);
  }));
