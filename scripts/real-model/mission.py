#!/usr/bin/env python3
"""Runs the orchestrator against a real local model on a toy Python repository, and says what happened.

Used by `check` (CI: stop once a valid plan is accepted) and `field-test` (whole missions). It starts
serve.mjs on a free loopback port with the given GGUF, writes the toy repository (calc.py with add and
sub, test_calc.py), runs `orchestrator task --json` in it, reads the event stream as it comes, and
prints one JSON summary on stdout: outcome, wall time, model calls and their constraints, tokens,
corrections the engine sent, units, and — for whole missions — whether the tests pass on the user's
branch and the asked-for functions are there. Exit 0 when the goal (`--until plan` or `--until
sealed`) was reached, 1 when not, 2 on a usage or setup error.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

CALC = '''"""A tiny calculator."""


def add(a, b):
    return a + b


def sub(a, b):
    return a - b
'''

TEST_CALC = '''import unittest

from calc import add, sub


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)

    def test_sub(self):
        self.assertEqual(sub(5, 3), 2)


if __name__ == "__main__":
    unittest.main()
'''

OBJECTIVES = {
    # One unit's worth: a function and its test.
    "one": "Add a function mul(a, b) to calc.py that returns a * b, and a test for it in test_calc.py.",
    # Three units' worth, as the issue's field test asks.
    "three": (
        "Add three functions to calc.py, each with a test in test_calc.py: mul(a, b) returns a * b; "
        "div(a, b) returns a / b and raises ValueError when b is 0; pow(a, b) returns a ** b."
    ),
}
FUNCTIONS = {"one": ["mul"], "three": ["mul", "div", "pow"]}


def config(ctx: int, worker_temperature: float = 0.0) -> str:
    # The small-model profile (one session at a time, the pre-scan instead of scouts, fewer tools
    # per role, short replies), the envelope for every session, and deterministic sampling.
    return f"""model = "local"
profile = "small"

[verify]
test = "python3 test_calc.py"

[endpoint]
output = "json_schema"
first_byte_timeout_secs = 900
request_timeout_secs = 1800

[models.local]
context_window = {ctx}

[roles.planner]
temperature = 0.0
[roles.worker]
temperature = {worker_temperature}
[roles.reviewer]
temperature = 0.0
[roles.master_reviewer]
temperature = 0.0
[roles.conflict_resolver]
temperature = 0.0
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def make_repo(repo: Path, ctx: int, worker_temperature: float) -> None:
    repo.mkdir(parents=True)
    (repo / "calc.py").write_text(CALC)
    (repo / "test_calc.py").write_text(TEST_CALC)
    (repo / "orchestrator.toml").write_text(config(ctx, worker_temperature))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=Field Test", "-c", "user.email=field@test.invalid",
        "commit", "-q", "-m", "calculator")


def start_server(model: str, ctx: int, log_path: Path) -> tuple[subprocess.Popen, str]:
    log = open(log_path, "w")
    server = subprocess.Popen(
        ["node", str(HERE / "serve.mjs"), "--model", model, "--port", "0", "--ctx", str(ctx)],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    deadline = time.monotonic() + 180
    line = ""
    # A thread reads the one line, so a server that never prints it cannot hang us past the deadline.
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(server.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=max(0, deadline - time.monotonic()))
    line = got[0] if got else ""
    if not line.startswith("listening on "):
        server.kill()
        sys.exit(f"error: serve.mjs did not start (see {log_path}):\n{log_path.read_text()[-2000:]}")
    return server, line.split("listening on ", 1)[1].strip()


def summarise(events: list[dict]) -> dict:
    calls = [e for e in events if e.get("type") == "model_call"]
    constraints: dict[str, int] = {}
    for call in calls:
        key = call.get("constraint") or "free"
        constraints[key] = constraints.get(key, 0) + 1
    finished = [e for e in events if e.get("type") == "mission_finished"]
    plans = [e for e in events if e.get("type") == "plan_accepted"]
    tools = [e for e in events if e.get("type") == "tool_called"]
    return {
        "model_calls": len(calls),
        "calls_by_role": count(calls, "role"),
        "constraints": constraints,
        "input_tokens": sum(c.get("usage", {}).get("input_tokens", 0) for c in calls),
        "output_tokens": sum(c.get("usage", {}).get("output_tokens", 0) for c in calls),
        "tool_calls": count(tools, "tool"),
        "failed_tool_calls": sum(1 for t in tools if t.get("ok") is False),
        "plan_rejections": sum(1 for e in events if e.get("type") == "plan_rejected"),
        "plan": [u.get("id") for u in plans[0].get("units", [])] if plans else None,
        "units_spawned": sum(len(e.get("units", [])) for e in events if e.get("type") == "units_spawned"),
        "reviews": [(e.get("unit"), e.get("review", {}).get("verdict")) for e in events if e.get("type") == "review_finished"],
        "merged": [e.get("unit") for e in events if e.get("type") == "merged"],
        "candidates": [(e.get("unit"), e.get("candidate"), e.get("passed")) for e in events
                       if e.get("type") == "candidate_finished"],
        "picks": [(e.get("unit"), e.get("candidate"), e.get("reasons")) for e in events
                  if e.get("type") == "candidate_picked"],
        "notices": [e.get("message") for e in events if e.get("type") == "notice"][:20],
        "outcome": finished[0].get("outcome") if finished else None,
        "summary": finished[0].get("summary") if finished else None,
    }


def count(events: list[dict], key: str) -> dict:
    out: dict[str, int] = {}
    for e in events:
        out[str(e.get(key))] = out.get(str(e.get(key)), 0) + 1
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="path of the GGUF (fetch-model prints it)")
    parser.add_argument("--objective", choices=sorted(OBJECTIVES), default="one")
    parser.add_argument("--until", choices=["plan", "sealed"], default="sealed")
    parser.add_argument("--ctx", type=int, default=16384)
    parser.add_argument("--minutes", type=float, default=60, help="give up after this long")
    parser.add_argument("--orchestrator", default=str(ROOT / "target" / "debug" / "orchestrator"))
    parser.add_argument("--keep", help="keep the repository and logs in this folder")
    # Best of N (issue #18) as a lever for a weak worker: N candidates per unit, sampled apart.
    parser.add_argument("--attempts", type=int, default=1, help="candidates per unit (best of N)")
    parser.add_argument("--worker-temperature", type=float, default=0.0,
                        help="the worker's sampling temperature (above 0 for candidates to differ)")
    args = parser.parse_args()
    if not Path(args.orchestrator).is_file():
        print(f"error: {args.orchestrator} is missing; build it with `cargo build -p orchestrator-cli`",
              file=sys.stderr)
        return 2

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="orchestrator-field-"))
    if args.keep and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    repo = work / "repo"
    make_repo(repo, args.ctx, args.worker_temperature)
    server, base = start_server(args.model, args.ctx, work / "serve.log")
    env = dict(os.environ, OPENAI_BASE_URL=f"{base}/v1", OPENAI_API_KEY="local",
               ORCHESTRATOR_PLAIN="1", NO_COLOR="1")
    env.pop("ANTHROPIC_API_KEY", None)
    started = time.monotonic()
    events: list[dict] = []
    reached = False
    stderr = open(work / "orchestrator.stderr", "w")
    mission = subprocess.Popen(
        [args.orchestrator, "task", "--json",
         *(["--attempts", str(args.attempts)] if args.attempts > 1 else []),
         OBJECTIVES[args.objective]],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        start_new_session=True,
    )
    timer = threading.Timer(args.minutes * 60, lambda: os.killpg(mission.pid, signal.SIGTERM))
    timer.start()
    try:
        with open(work / "events.jsonl", "w") as log:
            for line in mission.stdout:
                log.write(line)
                # Read while the run goes on (and kept if this script is stopped).
                log.flush()
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                events.append(event)
                if args.until == "plan" and event.get("type") == "plan_accepted":
                    reached = bool(event.get("units"))
                    os.killpg(mission.pid, signal.SIGTERM)
                    break
        mission.wait(timeout=120)
    finally:
        timer.cancel()
        if mission.poll() is None:
            os.killpg(mission.pid, signal.SIGKILL)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    result = {"objective": args.objective, "model": Path(args.model).name, "until": args.until,
              "attempts": args.attempts, "worker_temperature": args.worker_temperature,
              "exit_code": mission.returncode, "wall_seconds": round(time.monotonic() - started, 1)}
    result.update(summarise(events))
    if args.until == "sealed":
        test = subprocess.run(["python3", "test_calc.py"], cwd=repo, capture_output=True, text=True)
        source = (repo / "calc.py").read_text()
        result["tests_pass_on_main"] = test.returncode == 0
        result["functions_present"] = {f: f"def {f}(" in source for f in FUNCTIONS[args.objective]}
        result["main_commits"] = git(repo, "log", "--oneline", "main").count("\n")
        reached = (result["outcome"] == "sealed" and result["tests_pass_on_main"]
                   and all(result["functions_present"].values()))
    result["goal_reached"] = reached
    result["work_dir"] = str(work)
    print(json.dumps(result, indent=2))
    if not args.keep and reached:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
