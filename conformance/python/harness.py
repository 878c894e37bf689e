"""The tiny test harness the conformance scenarios share: each `@check` runs at once, prints
`ok`/`FAIL` with the reason, and `finish()` prints "N passed, M failed" and exits non-zero on
any failure. Checks keep going after a failure so one run reports everything."""

import sys
import traceback

results = []


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok    {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and keep going
            results.append((name, e))
            print(f"FAIL  {name}: {e!r}", flush=True)
            traceback.print_exc()
        return fn

    return wrap


def finish():
    failed = [n for n, e in results if e is not None]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)
