// The web dashboard in a real browser: Debian's headless Chromium loads `orchestrator serve`, starts a
// mission through the page's form against the scripted fake model, and watches the task tree fill in
// until the mission is sealed. The server makes its own token; the page is opened once through the
// address with the token that the server prints, as a person would, and keeps it in a cookie. First it
// checks that the page's prefill of the repository field never writes into what the user types. It
// builds nothing: it runs the binaries cargo built (ORCHESTRATOR_BIN and FAKE_MODEL_BIN, or
// target/debug/ by default) and never downloads a browser.
//
//   cargo build -p orchestrator-cli -p orchestrator-fake-model && (cd tests/browser && npm ci && npm test)

import { after, before, test } from "node:test";
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

/** One server, fake model and browser for all the tests below; cleaned up after the last one. */
const world = {};

before(async () => {
  const orchestrator = binary("ORCHESTRATOR_BIN", "orchestrator");
  const fakeModel = binary("FAKE_MODEL_BIN", "fake-model");
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium (or set CHROMIUM_BIN)`);

  world.work = mkdtempSync(join(tmpdir(), "orchestrator-browser-"));
  world.repo = join(world.work, "repo");
  const home = join(world.work, "home");
  mkdirSync(home);
  makeRepo(world.repo);
  // A second one for the resume test: the demo plan's files, once sealed in a repository, are there.
  world.repo2 = join(world.work, "repo2");
  makeRepo(world.repo2);
  // A third for the message form.
  world.repo3 = join(world.work, "repo3");
  makeRepo(world.repo3);

  const fakeArgs = ["--units", String(UNITS), "--latency-ms", String(LATENCY_MS)];
  world.fake = await startProgram(fakeModel, fakeArgs, {}, /^http/);
  const modelUrl = world.fake.match.input.trim();
  world.serve = await startProgram(
    orchestrator,
    ["serve", "--bind", "127.0.0.1:0", "--repo", world.repo, "--repo", world.repo2, "--repo", world.repo3],
    {
      cwd: world.repo,
      env: {
        PATH: process.env.PATH,
        HOME: home,
        XDG_CONFIG_HOME: join(home, ".config"),
        OPENAI_BASE_URL: modelUrl,
        OPENAI_API_KEY: "browser-test",
        ORCHESTRATOR_MODEL: "scripted",
      },
    },
    // The dashboard's address with the token the server made for this run.
    /^open the dashboard: (http:\/\/\S+?)\/\?token=([0-9a-f]+)$/,
  );
  world.base = world.serve.match[1];
  world.orchestrator = orchestrator;
  const token = world.serve.match[2];

  world.context = await chromium.launchPersistentContext(join(world.work, "chromium-profile"), {
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
  // The printed address once: the server sets the token's cookie and sends the browser on to `/`.
  const page = await world.context.newPage();
  await page.goto(`${world.base}/?token=${token}`);
  assert.equal(page.url(), `${world.base}/`, "the token left the address bar");
  await page.close();
});

after(async () => {
  await world.context?.close().catch(() => {});
  await stop(world.serve?.child);
  await stop(world.fake?.child);
  if (world.work) rmSync(world.work, { recursive: true, force: true });
});

/** A page of the browser that records script errors and failed requests in `errors`. */
async function openPage() {
  const page = await world.context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("response", (response) => {
    if (response.status() >= 400) errors.push(`${response.status()} ${response.url()}`);
  });
  page.on("requestfailed", (request) => errors.push(`failed: ${request.url()}`));
  return { page, errors };
}

/**
 * Resolves once the page has applied its next mission list: every list load replaces the options of
 * the known-repos datalist, and the repository prefill is decided in the same step. The options there
 * now are marked first, so only a list applied after this call counts.
 */
async function nextMissionList(page) {
  await page.evaluate(() => {
    for (const option of document.querySelectorAll("#known-repos option")) option.dataset.old = "1";
  });
  await page.waitForFunction(
    () => document.querySelector("#known-repos option") && !document.querySelector("#known-repos option[data-old]"),
    null,
    { timeout: 15_000 },
  );
}

test("a repository path typed while the mission list arrives is not prefilled into", { timeout: 60_000 }, async () => {
  const { page, errors } = await openPage();
  try {
    // The race of the flaky run, made certain: the page's first GET /api/missions is held until the
    // field has focus, as Playwright's fill() gives it before it inserts the text.
    let release;
    const held = new Promise((resolveHeld) => (release = resolveHeld));
    await page.route("**/api/missions", async (route) => {
      await held;
      await route.continue();
    });
    await page.goto(`${world.base}/`);
    const field = page.getByTestId("start-repo");
    await field.focus();
    release();
    await page.waitForFunction(() => document.querySelector("#known-repos option"), null, { timeout: 15_000 });
    // Now the text, as fill() inserts it; before the fix the prefill sat in front of the cursor.
    await page.keyboard.insertText(world.repo);
    assert.equal(await field.inputValue(), world.repo, "the field holds what was typed, once");
    await page.unroute("**/api/missions");

    // A field the user has emptied stays empty through the next list loads.
    await page.reload();
    await page.waitForFunction(() => document.getElementById("start-repo").value !== "", null, { timeout: 15_000 });
    await field.fill("");
    await nextMissionList(page);
    assert.equal(await field.inputValue(), "", "the cleared field is not filled again");
    assert.deepEqual(errors, [], "no script errors on the page");
  } finally {
    await page.close();
  }
});

test("the dashboard shows a mission's tree filling in until it is sealed", { timeout: 300_000 }, async () => {
  const { repo, serve } = world;
  const { page, errors: pageErrors } = await openPage();

  try {
    await page.goto(`${world.base}/`);
    // The page prefills the repository field from its first mission list; fill only after that list is
    // in, and check what the form will send.
    await page.waitForFunction(() => document.querySelector("#known-repos option"), null, { timeout: 30_000 });
    await page.getByTestId("start-repo").fill(repo);
    assert.equal(await page.getByTestId("start-repo").inputValue(), repo, "the repository field before submitting");
    await page.getByTestId("start-objective").fill("Write the demo parts and an index of them");
    await page.getByTestId("start-submit").click();
    // Either the mission opens or the form says why it did not start.
    const startError = page.getByTestId("start-error");
    const opened = page.getByTestId("mission").or(startError).filter({ visible: true }).first();
    await opened.waitFor({ timeout: 60_000 });
    if (await startError.isVisible()) {
      assert.fail(`the form did not start the mission: ${(await startError.textContent()).trim()}`);
    }

    // Watch the tree: how many rows it reaches and which states it passes through; and the plan graph,
    // which must be drawn while the mission runs, not only at the end.
    const seen = new Set();
    const drawn = new Set();
    let mostRows = 0;
    const deadline = Date.now() + MISSION_LIMIT_MS;
    let outcome = "";
    while (Date.now() < deadline) {
      const states = await page
        .getByTestId("unit-row")
        .evaluateAll((rows) => rows.map((row) => row.dataset.state));
      states.forEach((state) => seen.add(state));
      const nodes = await page.locator("#plan-graph [data-unit]").evaluateAll((n) => n.map((g) => g.dataset.state));
      nodes.forEach((state) => drawn.add(state));
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
    await picturesMatchTheTable(page);
    const liveDrawn = [...drawn].filter((state) => !["passed", "failed", "skipped"].includes(state));
    assert.ok(liveDrawn.length > 0, `the graph was drawn during the mission (node states seen: ${[...drawn].join(", ")})`);
    // A unit picked in the graph is highlighted in the tree.
    const picked = await page.getByTestId("unit-row").last().getAttribute("data-unit");
    await page.locator(`#plan-graph [data-unit="${picked}"]`).click();
    await page.locator(`tr.chosen[data-unit="${picked}"]`).waitFor({ timeout: 5_000 });
    assert.ok((await page.getByTestId("usage-chart").locator("svg rect").count()) > 0, "the usage chart has bars");
    assert.equal(await page.getByTestId("mission-state").textContent(), "sealed");
    assert.equal(await page.getByTestId("mission-phase").textContent(), "finished");
    await page.getByTestId("mission-item-state").first().filter({ hasText: "sealed" }).waitFor({ timeout: 10_000 });
    assert.deepEqual(pageErrors, [], "no script errors on the page");
    // Always kept, as the test's artifact: what a person sees at the end, pictures included.
    const shots = SCREENSHOTS || join(here, "artifacts");
    mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: join(shots, "dashboard-sealed.png"), fullPage: true });
  } catch (error) {
    const shots = join(here, "artifacts");
    mkdirSync(shots, { recursive: true });
    const shot = join(shots, `dashboard-failure-${Date.now()}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.error(`screenshot: ${shot}\nserver output:\n${serve.output.join("")}`);
    throw error;
  }
});

/** Waits until the plan graph and the timeline show exactly the table's units, each in the table's state. */
async function picturesMatchTheTable(page) {
  const read = () =>
    page.evaluate(() => {
      const states = (selector) =>
        Object.fromEntries([...document.querySelectorAll(selector)].map((n) => [n.dataset.unit, n.dataset.state]));
      return {
        table: states("#unit-rows tr[data-unit]"),
        graph: states("#plan-graph svg g[data-unit]"),
        timeline: states("#timeline svg g[data-unit]"),
      };
    });
  const sorted = (o) => Object.fromEntries(Object.entries(o).sort());
  // The pictures are fetched after the table, so give them a moment to catch up with it.
  const deadline = Date.now() + 15_000;
  let seen = await read();
  while (Date.now() < deadline) {
    const same = (o) => JSON.stringify(sorted(o)) === JSON.stringify(sorted(seen.table));
    if (same(seen.graph) && same(seen.timeline)) break;
    await page.waitForTimeout(200);
    seen = await read();
  }
  assert.deepEqual(sorted(seen.graph), sorted(seen.table), "the graph has every unit of the table, in its state");
  assert.deepEqual(sorted(seen.timeline), sorted(seen.table), "the timeline has every unit of the table, in its state");
}

/** Waits until the selected mission's state badge says `word`. */
async function missionStateIs(page, word, timeout = 60_000) {
  await page.getByTestId("mission-state").filter({ hasText: new RegExp(`^${word}$`) }).waitFor({ timeout });
}

/** Cancels the selected mission through its button, accepting the page's question. */
async function cancelFromPage(page) {
  page.once("dialog", (dialog) => dialog.accept());
  await page.getByTestId("cancel-button").click();
  await missionStateIs(page, "interrupted");
}

test("an interrupted mission is resumed from the page; a start beside it says how", { timeout: 300_000 }, async () => {
  const { repo2: repo, serve } = world;
  const { page, errors } = await openPage();
  try {
    await page.goto(`${world.base}/`);
    await page.waitForFunction(() => document.querySelector("#known-repos option"), null, { timeout: 30_000 });
    await page.getByTestId("start-repo").fill(repo);
    await page.getByTestId("start-objective").fill("Write the demo parts again");
    await page.getByTestId("start-submit").click();
    await page.getByTestId("mission").waitFor({ timeout: 60_000 });
    await missionStateIs(page, "running");
    await cancelFromPage(page);
    assert.ok(await page.getByTestId("resume-button").isVisible(), "an interrupted mission offers Resume");
    await page.getByTestId("resume-item").first().waitFor({ timeout: 15_000 });

    // A new mission would leave it behind: the form says so, with the ways on as buttons.
    await page.getByTestId("start-objective").fill("Something else");
    await page.getByTestId("start-submit").click();
    const refusal = page.getByTestId("start-error");
    await refusal.waitFor({ timeout: 30_000 });
    const words = await refusal.textContent();
    assert.match(words, /interrupted mission/, words);
    assert.match(words, /abandon_interrupted/, words);
    assert.ok(await page.getByTestId("start-abandon").isVisible(), "the abandon way is offered");

    // Resumed from the refusal, cancelled again, and resumed from its own button to the seal.
    await page.getByTestId("start-resume").click();
    await missionStateIs(page, "running");
    assert.ok(await refusal.isHidden(), "the refusal goes once the mission is resumed");
    await cancelFromPage(page);
    await page.getByTestId("resume-button").click();
    await missionStateIs(page, "running");
    await missionStateIs(page, "sealed", MISSION_LIMIT_MS);
    assert.ok(await page.getByTestId("resume-button").isHidden(), "a sealed mission has no Resume");
    const unexpected = errors.filter((e) => !e.startsWith("409 ") || !e.endsWith("/api/missions"));
    assert.deepEqual(unexpected, [], "no script errors on the page, only the refused start");
  } catch (error) {
    const shots = join(here, "artifacts");
    mkdirSync(shots, { recursive: true });
    const shot = join(shots, `dashboard-resume-failure-${Date.now()}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.error(`screenshot: ${shot}\nserver output:\n${serve.output.join("")}`);
    throw error;
  } finally {
    await page.close();
  }
});

test("a message typed into the form reaches the unit's worker, or the log says why not", { timeout: 300_000 }, async () => {
  const { repo3: repo, serve } = world;
  const { page, errors } = await openPage();
  const words = "Keep every part to one line";
  try {
    await page.goto(`${world.base}/`);
    await page.waitForFunction(() => document.querySelector("#known-repos option"), null, { timeout: 30_000 });
    await page.getByTestId("start-repo").fill(repo);
    await page.getByTestId("start-objective").fill("Write the demo parts, steered");
    await page.getByTestId("start-submit").click();
    await page.getByTestId("mission").waitFor({ timeout: 60_000 });
    // A unit still at work has a ✉ button; it names the unit in the form.
    const button = page.getByTestId("tell-unit-button").first();
    await button.waitFor({ timeout: 60_000 });
    await button.click();
    const unit = await page.getByTestId("tell-unit").inputValue();
    assert.ok(unit.length > 0, "the button named its unit");
    await page.getByTestId("tell-message").fill(words);
    await page.getByTestId("tell-button").click();
    await page.waitForFunction(() => document.querySelector("#tell-message").value === "", null, { timeout: 15_000 });
    const error = page.getByTestId("mission-error");
    // A unit the mission does not have is refused where the user typed, with the reason.
    await page.getByTestId("tell-unit").fill("zz");
    await page.getByTestId("tell-message").fill("hello");
    await page.getByTestId("tell-button").click();
    await error.filter({ hasText: "no unit `zz`" }).waitFor({ timeout: 15_000 });
    await missionStateIs(page, "sealed", MISSION_LIMIT_MS);

    // The message is delivered to that worker before its next model call, or, when the worker had
    // made its last one, the log says it was not delivered; either way it is accounted for.
    const log = execFileSync(world.orchestrator, ["logs", "--json"], { cwd: repo, encoding: "utf8" })
      .split("\n")
      .filter((line) => line.trim())
      .map((line) => JSON.parse(line));
    const delivered = log.filter((e) => e.type === "user_message" && e.message === words);
    const undelivered = log.filter((e) => e.type === "notice" && e.message.includes("not delivered") && e.message.includes(words));
    assert.equal(delivered.length + undelivered.length, 1, JSON.stringify([...delivered, ...undelivered]));
    if (delivered.length) assert.equal(delivered[0].unit, unit);
    const unexpected = errors.filter((e) => !e.startsWith("422 ") || !e.endsWith("/tell"));
    assert.deepEqual(unexpected, [], "no script errors on the page, only the refused message");
  } catch (error) {
    const shots = join(here, "artifacts");
    mkdirSync(shots, { recursive: true });
    const shot = join(shots, `dashboard-tell-failure-${Date.now()}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.error(`screenshot: ${shot}\nserver output:\n${serve.output.join("")}`);
    throw error;
  } finally {
    await page.close();
  }
});
