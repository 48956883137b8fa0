#!/bin/bash
# Run pytest arguments N times while two busy processes load both cores (issue #17: the virtual-hand tests
# must hold on a loaded machine). Usage: scripts/under_load.sh N PYTEST_ARGS...
set -u
runs=$1; shift
python3 -c "while True: pass" & a=$!
python3 -c "while True: pass" & b=$!
trap 'kill $a $b 2>/dev/null' EXIT
passed=0
for i in $(seq 1 "$runs"); do
    if .venv/bin/python -m pytest -q -p no:randomly "$@" > "/tmp/under_load_$i.log" 2>&1; then
        passed=$((passed + 1)); echo "run $i: passed ($(tail -1 /tmp/under_load_$i.log))"
    else
        echo "run $i: FAILED"; grep -E "^(FAILED|E )" "/tmp/under_load_$i.log" | head -5
    fi
done
echo "$passed of $runs runs passed under load"
