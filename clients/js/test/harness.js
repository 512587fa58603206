// Real processes for the SDK tests: notify hosts (the binary cargo built) and a private
// redis-server, on free loopback ports, stopped when the test ends.

import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { createHmac } from "node:crypto";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "../../..");
const HOST_BIN = process.env.NOTIFY_HOST_BIN ?? join(root, "target/debug/notify-host");

/** Waits until `check` returns something truthy (polling), or fails after `ms`. */
export async function eventually(check, ms = 20_000) {
  const until = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > until) throw new Error(`condition not met within ${ms} ms: ${check}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A host process with `toml` (its `[server] listen` must name a fixed port to restart on it). */
export class Host {
  constructor(toml) {
    this.toml = toml;
    this.dir = mkdtempSync(join(tmpdir(), "notify-js-"));
    this.child = null;
  }

  static async start(toml) {
    const host = new Host(toml);
    await host.run();
    return host;
  }

  /** Starts the process and resolves once it listens. */
  run() {
    const config = join(this.dir, "config.toml");
    this.addr = undefined;
    writeFileSync(config, this.toml);
    this.child = spawn(HOST_BIN, ["--config", config], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "info", NOTIFY_SERVER__METRICS_LISTEN: "127.0.0.1:0" } });
    return new Promise((resolve, reject) => {
      let seen = "";
      this.child.once("exit", (code) => {
        if (!this.addr) reject(new Error(`host exited (${code}) before listening: ${seen}`));
      });
      this.child.stdout.on("data", (chunk) => {
        seen += chunk;
        const match = /listening on (\S+)/.exec(seen);
        if (match && !this.addr) {
          this.addr = match[1];
          resolve(this);
        }
        if (seen.length > 65536) seen = seen.slice(-4096);
      });
    });
  }

  get url() {
    return `http://${this.addr}`;
  }

  /** Sends `signal` and waits for the process to exit. */
  async stop(signal = "SIGKILL") {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await exited;
  }

  async restart() {
    await this.stop();
    await this.run();
  }

  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  async publish(key, body) {
    const response = await fetch(`${this.url}/v1/publish`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    if (response.status !== 202) throw new Error(`publish: ${response.status} ${await response.text()}`);
    return response.json();
  }
}

/** A private redis-server on a free port. */
export class Redis {
  static async start() {
    const redis = new Redis();
    redis.port = await freePort();
    redis.child = spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(redis.port), "--save", "", "--appendonly", "no"], { stdio: "ignore" });
    await eventually(async () => {
      const { Socket } = await import("node:net");
      return new Promise((resolve) => {
        const socket = new Socket();
        socket.once("error", () => resolve(false));
        socket.connect(redis.port, "127.0.0.1", () => {
          socket.write("PING\r\n");
          socket.once("data", (d) => {
            socket.destroy();
            resolve(String(d).startsWith("+PONG"));
          });
        });
      });
    });
    return redis;
  }

  async dispose() {
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGKILL");
    await exited;
  }
}

/** An HS256 JWT for `sub` expiring in `seconds`. */
export function hs256(secret, sub, seconds) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + seconds })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** Collects what a client emits. */
export function record(client) {
  const seen = { events: [], states: [], errors: [], recovered: [], unread: [] };
  client.on("event", (event) => seen.events.push(event));
  client.on("state", (state) => seen.states.push(state));
  client.on("error", (error) => seen.errors.push(error));
  client.on("recovered", (info) => seen.recovered.push(info));
  client.on("unread", (info) => seen.unread.push(info));
  return seen;
}
