// docs/GETTING-STARTED.md and docs/IDENTITY.md, run as a reader would: its shell blocks in one bash session
// (blocks marked `background` in a terminal of their own), its files written where it says,
// each `text output` block checked against what the command before it printed, and each
// `text page` block against the page it has the reader open, in headless Chromium. Ports the
// guide names are swapped for free ones (and its Redis for a private one), so the run
// touches nothing of the machine's; its home folder is a temporary one.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

import { chromium } from "playwright-core";

import { Redis, freePort } from "../test/harness.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../../..");
/** The host binary the guide's commands run (the test command sets NOTIFY_HOST_BIN). */
const HOST_BIN = process.env.NOTIFY_HOST_BIN ?? join(ROOT, "target/debug/notify-host");
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** Longest a block may run (one builds a plugin). */
const BLOCK_MS = 300_000;
/** Longest wait for something the guide says should appear. */
const STEP_MS = 30_000;

/** The guide's fenced blocks, in order: `{lang, attrs, text}`. */
function blocks(markdown) {
  return [...markdown.matchAll(/^```(\w*)([^\n]*)\n([\s\S]*?)^```$/gm)].map(([, lang, info, text]) => {
    const attrs = Object.fromEntries(info.trim().split(/\s+/).filter(Boolean).map((a) => {
      const at = a.indexOf("=");
      return at < 0 ? [a, true] : [a.slice(0, at), a.slice(at + 1)];
    }));
    return { lang, attrs, text };
  });
}

/** Whether every line of `expected` (`...` matching anything) is found in `actual`. */
function shows(expected, actual) {
  const lines = actual.split("\n");
  return expected.split("\n").filter((l) => l.trim()).every((line) => {
    const pattern = new RegExp(line.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replaceAll("\\.\\.\\.", ".*"));
    return lines.some((l) => pattern.test(l));
  });
}

/** One bash session that runs blocks as `source FILE`, so exports and `cd` carry over. */
class Session {
  constructor(env, dir) {
    this.dir = dir;
    this.out = "";
    this.err = "";
    this.count = 0;
    this.shell = spawn("bash", ["--noprofile", "--norc"], { cwd: ROOT, env, stdio: ["pipe", "pipe", "pipe"] });
    this.shell.stdout.on("data", (d) => (this.out += d));
    this.shell.stderr.on("data", (d) => (this.err += d));
    this.shell.stdin.write("set -eo pipefail\n");
  }

  /** Runs `text`; what it printed. Fails if it failed or ran past BLOCK_MS. */
  async run(text) {
    const file = join(this.dir, `block${++this.count}.sh`);
    writeFileSync(file, text);
    const marker = `__block_${this.count}_done__`;
    const start = this.out.length;
    this.shell.stdin.write(`source ${file}\necho ${marker}\n`);
    const deadline = Date.now() + BLOCK_MS;
    while (!this.out.includes(marker, start)) {
      const why = this.shell.exitCode !== null ? "failed" : Date.now() > deadline ? "ran too long" : null;
      if (why) throw new Error(`this block ${why}:\n${text}\n-- it printed:\n${this.out.slice(start)}\n-- stderr:\n${this.err}`);
      await sleep(50);
    }
    return this.out.slice(start, this.out.indexOf(marker, start));
  }

  /** Runs `text` in a terminal of its own: the session's environment and folder, its own
   * process group. */
  async background(text, env) {
    await this.run(`export -p > ${this.dir}/env.sh; pwd > ${this.dir}/cwd`);
    const script = `source ${this.dir}/env.sh; cd "$(cat ${this.dir}/cwd)"\n${text}`;
    const child = spawn("bash", ["--noprofile", "--norc", "-c", script], { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    child.output = "";
    child.stdout.on("data", (d) => (child.output += d));
    child.stderr.on("data", (d) => (child.output += d));
    return child;
  }

  close() {
    this.shell.stdin.end();
    this.shell.kill();
  }
}

async function until(what, check) {
  const deadline = Date.now() + STEP_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await sleep(100);
  }
}

/**
 * Runs the guide `file` as a reader would. `swaps` ([from, to]) replace its ports and
 * commands in every block; its node runs the checkout's config.toml on `node` (and
 * `metrics`); the reader opens `pageUrl`. At least `minChecks` outputs and pages are checked.
 */
async function walk(t, { file, swaps, node, metrics, pageUrl, minChecks }) {
  const swap = (text) => swaps.reduce((s, [from, to]) => s.replaceAll(from, to), text);
  const home = mkdtempSync(join(tmpdir(), "notify-guide-"));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  const work = mkdtempSync(join(tmpdir(), "notify-guide-run-"));
  t.after(() => rmSync(work, { recursive: true, force: true }));
  const env = {
    ...process.env,
    HOME: home,
    CARGO_HOME: process.env.CARGO_HOME ?? join(homedir(), ".cargo"),
    RUSTUP_HOME: process.env.RUSTUP_HOME ?? join(homedir(), ".rustup"),
  };
  // The reader's first node runs config.toml, which names the guide's ports and keeps what
  // it stores in the checkout's data/.
  const nodeEnv = {
    ...env,
    NOTIFY_SERVER__LISTEN: `127.0.0.1:${node}`,
    NOTIFY_SERVER__METRICS_LISTEN: `127.0.0.1:${metrics}`,
    NOTIFY_SERVER__DATA_DIR: join(work, "data"),
  };
  const session = new Session(env, work);
  t.after(() => session.close());
  const terminals = [];
  t.after(() => terminals.forEach((c) => c.exitCode === null && process.kill(-c.pid, "SIGTERM")));
  t.after(() => {
    const pids = join(home, "shop-app/nodes.pid");
    if (existsSync(pids)) readFileSync(pids, "utf8").split(/\s+/).filter(Boolean).forEach((p) => {
      try { process.kill(Number(p), "SIGKILL"); } catch { /* already gone */ }
    });
  });
  let browser;
  let page;
  const problems = [];
  t.after(() => browser?.close());

  const guide = blocks(readFileSync(join(ROOT, file), "utf8"));
  assert.ok(guide.length > 10, "found the guide's blocks");
  let printed = () => "";
  let checked = 0;
  for (const block of guide) {
    const text = swap(block.text);
    if (block.attrs.docker) {
      assert.ok(existsSync(join(ROOT, "deploy/compose.yaml")), "the compose file the guide names");
    } else if (block.attrs.file) {
      const path = block.attrs.file.replace(/^~/, home);
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, text);
    } else if (block.lang === "sh" && block.attrs.background) {
      const child = await session.background(text, nodeEnv);
      terminals.push(child);
      printed = () => child.output;
    } else if (block.lang === "sh") {
      const output = await session.run(text);
      printed = () => output;
    } else if (block.attrs.output) {
      await until(`the output ${text.trim()} (printed: ${printed()})`, () => shows(text, printed()));
      checked += 1;
    } else if (block.attrs.page) {
      if (!page) {
        browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
        page = await browser.newPage();
        page.on("pageerror", (error) => problems.push(error.message));
        await page.goto(pageUrl);
      }
      for (const line of text.split("\n").filter((l) => l.trim())) {
        await page.waitForFunction((l) => document.body.innerText.includes(l), line, { timeout: STEP_MS }).catch(async () => {
          throw new Error(`the page never showed ${line}; it shows:\n${await page.innerText("body")}`);
        });
      }
      checked += 1;
    }
  }
  assert.ok(checked >= minChecks, `checked ${checked} outputs`);
  assert.ok(page, "the guide has the reader open its page");
  assert.deepEqual(problems, []);
}

test("every step of docs/GETTING-STARTED.md does what it says", async (t) => {
  const redis = await Redis.start();
  t.after(() => redis.dispose());
  const [node, metrics, app] = [await freePort(), await freePort(), await freePort()];
  const swaps = [
    ["cargo run --release -p notify-host", HOST_BIN],
    ["$PWD/target/release", dirname(HOST_BIN)],
    ["127.0.0.1:8080", `127.0.0.1:${node}`],
    ["127.0.0.1:9464", `127.0.0.1:${metrics}`],
    ["127.0.0.1:8000", `127.0.0.1:${app}`],
    ['("127.0.0.1", 8000)', `("127.0.0.1", ${app})`],
    ["127.0.0.1:6379", `127.0.0.1:${redis.port}`],
    ["-p 6379", `-p ${redis.port}`],
  ];
  await walk(t, { file: "docs/GETTING-STARTED.md", swaps, node, metrics, pageUrl: `http://127.0.0.1:${app}/?user=alice`, minChecks: 12 });
});

test("every step of docs/IDENTITY.md does what it says", async (t) => {
  const [node, metrics, idp] = [await freePort(), await freePort(), await freePort()];
  const swaps = [
    ["cargo run --release -p notify-host", HOST_BIN],
    ["$PWD/target/release", dirname(HOST_BIN)],
    // The test command installed jose with the client's other dev dependencies.
    ["npm install --silent --no-audit --no-fund jose@6", `ln -sfn "${join(ROOT, "clients/js/node_modules")}" node_modules`],
    ["127.0.0.1:8080", `127.0.0.1:${node}`],
    ["127.0.0.1:8180", `127.0.0.1:${idp}`],
    ['.listen(8180, "127.0.0.1"', `.listen(${idp}, "127.0.0.1"`],
  ];
  await walk(t, { file: "docs/IDENTITY.md", swaps, node, metrics, pageUrl: `http://127.0.0.1:${idp}/?user=alice`, minChecks: 7 });
});
