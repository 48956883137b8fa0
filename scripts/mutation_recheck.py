"""Run the survivors of an earlier cosmic-ray session again, against the tests of this tree.

    python scripts/mutation_recheck.py CONFIG.toml EARLIER.sqlite

Called by ``RECHECK=DIR bash scripts/mutation_test.sh MODULE`` from a fresh copy of the tree (the mutated
module must be unchanged since the earlier run: a mutation is found by its occurrence in the source). Prints
each survivor's diff with its new outcome and the whole run's score with these results.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from cosmic_ray.mutating import mutate_and_test
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome


def main(config_path: str, db_path: str) -> int:
    config = tomllib.loads(Path(config_path).read_text())["cosmic-ray"]
    with use_db(db_path, WorkDB.Mode.open) as db:
        completed = db.completed_work_items
        pending = len(db.pending_work_items)
    survivors = [(item, result) for item, result in completed if result.test_outcome == TestOutcome.SURVIVED]
    tested = [result for _, result in completed if result.test_outcome is not None]  # not NO_TEST
    print(
        f"recheck: {len(survivors)} survivors of {len(tested)} mutants tested "
        f"({len(completed) - len(tested)} not applicable, {pending} never run)",
        flush=True,
    )
    still = 0
    for index, (item, old) in enumerate(survivors, 1):
        result = mutate_and_test(item.mutations, config["test-command"], config["timeout"])
        outcome = str(getattr(result.test_outcome or result.worker_outcome, "value", result.test_outcome))
        still += outcome == TestOutcome.SURVIVED.value
        print(f"--- [{index}/{len(survivors)}] {item.job_id}: {outcome}\n{old.diff}", flush=True)
    killed, total = len(tested) - still, len(tested)
    print(f"recheck: {still} still survive; killed {killed} of {total} ({100 * killed / total:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
