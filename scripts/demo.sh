#!/usr/bin/env bash
# Runs a whole mission offline: builds the orchestrator and the scripted fake model server, makes a
# throwaway git repository, and runs `orchestrator task` in it against the fake model on 127.0.0.1.
# Apart from the build in target/, nothing outside a temporary folder is touched. Usage: scripts/demo.sh [UNITS]
set -euo pipefail
units="${1:-3}"
root="$(cd "$(dirname "$0")/.." && pwd)"
# No --quiet: the first release build takes ~10 minutes on 2 cores, and cargo's progress shows it is working.
echo "demo: building orchestrator and the fake model server (release; the first build takes ~10 minutes on 2 cores)..."
cargo build --release --manifest-path "$root/Cargo.toml" -p orchestrator-cli -p orchestrator-fake-model
bin="$root/target/release"

work="$(mktemp -d)"
cleanup() { [ -n "${fake_pid:-}" ] && kill "$fake_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "demo: starting the scripted fake model on 127.0.0.1 ($units units)"
"$bin/fake-model" --units "$units" >"$work/fake.url" &
fake_pid=$!
for _ in $(seq 50); do [ -s "$work/fake.url" ] && break; sleep 0.1; done
url="$(head -n1 "$work/fake.url")"

repo="$work/repo"
mkdir -p "$repo" && cd "$repo"
git init -q -b main
git config user.email demo@example.com
git config user.name Demo
printf '# Demo project\n' >README.md
printf '[verify]\ntest = "test ! -e parts || ls parts >/dev/null"\n' >orchestrator.toml
git add -A && git commit -qm "demo start"

echo "demo: running the mission in the throwaway repository $repo"
set +e
OPENAI_BASE_URL="$url" OPENAI_API_KEY=demo ORCHESTRATOR_MODEL=scripted \
  "$bin/orchestrator" task "Write the demo parts and an index of them"
status=$?
set -e
echo
echo "exit status: $status; the result on main:"
git log --oneline --graph | head -n 20
ls parts
exit "$status"
