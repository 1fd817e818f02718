// The web dashboard in a real browser: Debian's headless Chromium loads `orchestrator serve`, starts a
// mission through the page's form against the scripted fake model, and watches the task tree fill in
// until the mission is sealed. It builds nothing: it runs the binaries cargo built (ORCHESTRATOR_BIN
// and FAKE_MODEL_BIN, or target/debug/ by default) and never downloads a browser.
//
//   cargo build -p orchestrator-cli -p orchestrator-fake-model && (cd tests/browser && npm ci && npm test)

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createInterface } from "node:readline";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const targetDir = process.env.CARGO_TARGET_DIR || join(root, "target");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const UNITS = 4; // the fake model's demo plan: UNITS parts and an index that depends on them
const LATENCY_MS = 250; // per model request, so the tree is seen filling in
const MISSION_LIMIT_MS = 240_000;
// Set to a folder to keep screenshots of the page mid-mission and at the end (for a look at the page).
const SCREENSHOTS = process.env.DASHBOARD_SCREENSHOTS;

function binary(envName, name) {
  const path = process.env[envName] || join(targetDir, "debug", name);
  if (!existsSync(path)) {
    throw new Error(
      `${path} does not exist: build it first (cargo build -p orchestrator-cli -p orchestrator-fake-model) or set ${envName}`,
    );
  }
  return path;
}

/** Starts a program and resolves with it and the first stdout line matching `pattern`. */
function startProgram(command, args, options, pattern) {
  const child = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] });
  const output = [];
  child.stderr.on("data", (chunk) => output.push(chunk.toString()));
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} printed nothing in 30 s:\n${output.join("")}`)), 30_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${command} exited with ${code} before it was ready:\n${output.join("")}`));
    });
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      output.push(`${line}\n`);
      const match = line.match(pattern);
      if (match) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolvePromise({ child, match, output });
      }
    });
  });
}

/** A throwaway git repository, as scripts/demo.sh makes it. */
function makeRepo(dir) {
  mkdirSync(dir, { recursive: true });
  const git = (...args) => execFileSync("git", args, { cwd: dir, stdio: "pipe" });
  git("init", "-q", "-b", "main");
  git("config", "user.email", "browser@example.com");
  git("config", "user.name", "Browser Test");
  writeFileSync(join(dir, "README.md"), "# Browser test project\n");
  writeFileSync(join(dir, "orchestrator.toml"), '[verify]\ntest = "test ! -e parts || ls parts >/dev/null"\n');
  git("add", "-A");
  git("commit", "-qm", "start");
}

function stop(child) {
  if (child && child.exitCode === null && child.signalCode === null) {
    return new Promise((done) => {
      const force = setTimeout(() => child.kill("SIGKILL"), 60_000);
      child.once("exit", () => {
        clearTimeout(force);
        done();
      });
      child.kill("SIGTERM");
    });
  }
  return Promise.resolve();
}

test("the dashboard shows a mission's tree filling in until it is sealed", { timeout: 300_000 }, async (t) => {
  const orchestrator = binary("ORCHESTRATOR_BIN", "orchestrator");
  const fakeModel = binary("FAKE_MODEL_BIN", "fake-model");
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium (or set CHROMIUM_BIN)`);

  const work = mkdtempSync(join(tmpdir(), "orchestrator-browser-"));
  const repo = join(work, "repo");
  const home = join(work, "home");
  mkdirSync(home);
  makeRepo(repo);
  let fake, serve, context, page;
  t.after(async () => {
    await context?.close().catch(() => {});
    await stop(serve?.child);
    await stop(fake?.child);
    rmSync(work, { recursive: true, force: true });
  });

  fake = await startProgram(fakeModel, ["--units", String(UNITS), "--latency-ms", String(LATENCY_MS)], {}, /^http/);
  const modelUrl = fake.match.input.trim();
  serve = await startProgram(
    orchestrator,
    ["serve", "--bind", "127.0.0.1:0", "--repo", repo],
    {
      cwd: repo,
      env: {
        PATH: process.env.PATH,
        HOME: home,
        XDG_CONFIG_HOME: join(home, ".config"),
        OPENAI_BASE_URL: modelUrl,
        OPENAI_API_KEY: "browser-test",
        ORCHESTRATOR_MODEL: "scripted",
      },
    },
    /listening on (http:\/\/\S+?)\/?$/,
  );
  const base = serve.match[1];

  context = await chromium.launchPersistentContext(join(work, "chromium-profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  page.on("response", (response) => {
    if (response.status() >= 400) pageErrors.push(`${response.status()} ${response.url()}`);
  });
  page.on("requestfailed", (request) => pageErrors.push(`failed: ${request.url()}`));

  try {
    await page.goto(`${base}/`);
    await page.getByTestId("start-repo").fill(repo);
    await page.getByTestId("start-objective").fill("Write the demo parts and an index of them");
    await page.getByTestId("start-submit").click();
    await page.getByTestId("mission").waitFor({ state: "visible", timeout: 60_000 });

    // Watch the tree: how many rows it reaches and which states it passes through.
    const seen = new Set();
    let mostRows = 0;
    const deadline = Date.now() + MISSION_LIMIT_MS;
    let outcome = "";
    while (Date.now() < deadline) {
      const states = await page
        .getByTestId("unit-row")
        .evaluateAll((rows) => rows.map((row) => row.dataset.state));
      states.forEach((state) => seen.add(state));
      if (SCREENSHOTS && mostRows < UNITS + 1 && states.length >= UNITS + 1) {
        await page.screenshot({ path: join(SCREENSHOTS, "dashboard-running.png"), fullPage: true });
      }
      mostRows = Math.max(mostRows, states.length);
      outcome = (await page.getByTestId("mission-outcome").textContent()).trim();
      if (outcome !== "—" && outcome !== "") break;
      await page.waitForTimeout(100);
    }

    assert.equal(outcome, "sealed", `the page shows the mission sealed (states seen: ${[...seen].join(", ")})`);
    assert.ok(mostRows >= UNITS + 1, `the tree filled in: ${mostRows} unit rows`);
    const live = [...seen].filter((state) => !["passed", "failed", "skipped"].includes(state));
    assert.ok(live.length > 0, `units were seen before they finished (states seen: ${[...seen].join(", ")})`);
    const final = await page.getByTestId("unit-row").evaluateAll((rows) => rows.map((row) => row.dataset.state));
    assert.deepEqual(new Set(final), new Set(["passed"]), "every unit passed");
    assert.equal(await page.getByTestId("mission-state").textContent(), "sealed");
    assert.equal(await page.getByTestId("mission-phase").textContent(), "finished");
    await page.getByTestId("mission-item-state").first().filter({ hasText: "sealed" }).waitFor({ timeout: 10_000 });
    assert.deepEqual(pageErrors, [], "no script errors on the page");
    if (SCREENSHOTS) await page.screenshot({ path: join(SCREENSHOTS, "dashboard-sealed.png"), fullPage: true });
  } catch (error) {
    const shots = join(here, "artifacts");
    mkdirSync(shots, { recursive: true });
    const shot = join(shots, `dashboard-failure-${Date.now()}.png`);
    await page?.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.error(`screenshot: ${shot}\nserver output:\n${serve.output.join("")}`);
    throw error;
  }
});
