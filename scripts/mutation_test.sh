#!/usr/bin/env bash
# Mutation testing of the safety layer with cosmic-ray (not part of CI: one test run per mutant).
#   bash scripts/mutation_test.sh [MODULE ...]      default: robot/safety_monitor.py
#   RECHECK=/tmp/handrail-mutation.XXXXXX bash scripts/mutation_test.sh MODULE ...
#       after new tests: run only the survivors of that earlier run (its MODULE.sqlite) against today's tests
# Works on a copy of the tree in a scratch folder, so the mutants cosmic-ray writes into files never land in
# this checkout (or in a process importing it). One worker, niced, pytest without plugin autoloading (2.4 s
# per mutant instead of 4.3 s). Prints the score and every survivor.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python_bin="${PYTHON:-$repo_root/.venv/bin/python}"
cosmic_ray="$(dirname "$python_bin")/cosmic-ray"
[[ -x "$cosmic_ray" ]] || { echo "mutation_test: install cosmic-ray first: $python_bin -m pip install cosmic-ray" >&2; exit 2; }
modules=("$@")
(( ${#modules[@]} )) || modules=(robot/safety_monitor.py)

# The fast tests that cover each safety module (the virtual-hand tests take too long per mutant).
declare -A tests_for=(
    [robot/safety_monitor.py]="tests/robot/test_safety_monitor.py"
    [robot/safety_limits.py]="tests/robot/test_safety_limits.py tests/robot/test_safety_filter.py tests/robot/test_profile.py"
    [robot/safety_filter.py]="tests/robot/test_safety_filter.py"
    [robot/safe_robot.py]="tests/robot/test_safe_robot.py"
    [robot/stall.py]="tests/robot/test_safety_monitor.py tests/robot/test_batch_monitor.py"
)

work="$(mktemp -d /tmp/handrail-mutation.XXXXXX)"
echo "mutation_test: working in $work"
cd "$repo_root"
git ls-files -z | xargs -0 -I{} cp --parents {} "$work/"
cd "$work"
# `handrail.<stage>` resolves to this copy: a package folder of links, first on PYTHONPATH (ahead of the
# checkout's editable install, whose finder Python consults after sys.path).
mkdir -p pkg/handrail
for file in handrail/*.py; do ln -s "../../$file" pkg/handrail/; done
for stage in robot sim vision deploy calibration; do ln -s "../../$stage" "pkg/handrail/$stage"; done

for module in "${modules[@]}"; do
    tests="${tests_for[$module]:?no test selection for $module}"
    name="$(basename "$module" .py)"
    cat > "$name.toml" <<EOF
[cosmic-ray]
module-path = "$module"
timeout = 60.0
excluded-modules = []
test-command = "nice -n 19 env PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 PYTHONPATH=$work/pkg MUJOCO_GL=egl HANDRAIL_PROPERTY_EXAMPLES_SCALE=0.02 $python_bin -P -m pytest -x -q -p no:cacheprovider $tests"

[cosmic-ray.distributor]
name = "local"
EOF
    if [[ -n "${RECHECK:-}" ]]; then
        nice -n 19 "$python_bin" "$repo_root/scripts/mutation_recheck.py" "$name.toml" "$RECHECK/$name.sqlite"
        continue
    fi
    nice -n 19 "$cosmic_ray" init "$name.toml" "$name.sqlite"
    nice -n 19 "$cosmic_ray" exec "$name.toml" "$name.sqlite"
    "$(dirname "$python_bin")/cr-report" --surviving-only --show-diff "$name.sqlite"
    "$(dirname "$python_bin")/cr-report" "$name.sqlite" | tail -3
done
