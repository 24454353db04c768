"""A writer process for the crash and concurrent-reader tests.

Usage: appender.py PATH BATCHES BATCH_SIZE [DELAY_SECONDS]
Appends BATCHES batches of BATCH_SIZE puts; each manifest carries its batch id, so
a reader can tell whole batches from torn ones. Prints the batch id after each
commit so the parent knows how far it got.
"""

import sys
import time

from eventlog import Change, LogStore, canonical_manifest


def main() -> None:
    path, batches, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    with LogStore(path) as store:
        start = store.head_offset // size  # continue after an earlier (killed) run
        for b in range(start, start + batches):
            changes = [
                Change(f"edge{i % 5}", "put", "default", f"pod{i}",
                       canonical_manifest({"batch": b, "i": i, "pad": "x" * 200}))
                for i in range(size)
            ]
            store.append(changes)
            print(b, flush=True)
            if delay:
                time.sleep(delay)


if __name__ == "__main__":
    main()
