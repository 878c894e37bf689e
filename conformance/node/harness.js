// The tiny harness the Node conformance scenarios share (scenarios.js, dps.js): each `check`
// runs one async check and prints `ok`/`FAIL` (or `xfail`/`skip`) with the reason; `finish()`
// writes the results for ../table.py, prints "N passed, M failed" and exits non-zero on any
// failure.
'use strict';

const fs = require('fs');

const results = [];

// Each check fills rows (scenarios) of one column (client, transport) of the table in
// docs/CONFORMANCE.md; results go to CONFORMANCE_RESULTS as JSON lines (see table.py). A
// cell's `client` defaults to 'Node SDKs'.
//
// `expectedFailure` (a reason naming the emulator defect) marks a check the emulator is known
// to fail: its failure prints "xfail" and counts neither way (the table still says failed);
// if it passes, that is a failure, so the stale mark gets removed.
const expected = [];
const skipped = [];
async function check(name, cell, fn, { expectedFailure = null } = {}) {
  // CONFORMANCE_FILTER (a substring of check names) runs only those checks, for debugging.
  if (process.env.CONFORMANCE_FILTER && !name.includes(process.env.CONFORMANCE_FILTER)) return;
  try {
    await fn();
    if (expectedFailure) {
      const e = new Error(`passed, but is marked as an expected failure (${expectedFailure}): remove the mark`);
      results.push([name, e, cell]);
      console.log(`FAIL  ${name}: ${e.message}`);
      return;
    }
    results.push([name, null, cell]);
    console.log(`ok    ${name}`);
  } catch (e) {
    if (expectedFailure) {
      expected.push([name, e, cell]);
      console.log(`xfail ${name}: expected failure, ${expectedFailure}: ${e && e.stack ? e.stack : e}`);
      return;
    }
    results.push([name, e, cell]);
    console.log(`FAIL  ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

// A check that cannot run (the SDK lacks the feature): printed with the reason, not counted.
function skip(name, reason) {
  skipped.push(name);
  console.log(`skip  ${name}: ${reason}`);
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// The name of an error's class, for messages ("no error" when there was none).
function kind(e) {
  return e ? `${e.constructor.name}: ${e.message}` : 'no error';
}

// Runs fn and returns what it threw (null if it did not throw).
async function thrown(fn) {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  return null;
}

// Closes a client or service client without letting a failed close hide the check's result.
async function closeQuietly(client) {
  try {
    await withTimeout(client.close(), 10000, 'close');
  } catch (e) {
    console.log(`      (close: ${kind(e)})`);
  }
}

// Writes the results (CONFORMANCE_RESULTS, JSON lines for ../table.py), prints the summary
// line run.sh reads, and exits: 1 if a check failed.
function finish() {
  if (process.env.CONFORMANCE_RESULTS) {
    const lines = results.concat(expected).flatMap(([name, e, cell]) => cell.scenarios.map((scenario) => JSON.stringify({
      scenario, client: cell.client || 'Node SDKs', transport: cell.transport, check: name, passed: e === null,
    }) + '\n'));
    fs.appendFileSync(process.env.CONFORMANCE_RESULTS, lines.join(''));
  }
  const failed = results.filter(([, e]) => e !== null).length;
  if (expected.length || skipped.length) console.log(`(${expected.length} expected failures, ${skipped.length} skipped, in neither count)`);
  console.log(`${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

module.exports = { check, skip, assert, withTimeout, kind, thrown, closeQuietly, finish };
