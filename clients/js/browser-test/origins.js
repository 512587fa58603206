// What a production deployment puts around the client: the app on its own origin (a static
// server for the page and the client module), and a proxy on the way to the host that
// breaks WebSocket upgrades while passing plain HTTP, as some corporate proxies do.

import { createServer, request } from "node:http";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const CLIENT = join(HERE, "../src/notify.js");
const TYPES = { ".html": "text/html", ".js": "text/javascript" };

/** Serves `files` ({path: file}) on a free port of 127.0.0.1; the page's origin is `origin`. */
export async function serveApp(files = {}) {
  const routes = { "/": join(HERE, "app/index.html"), "/notify.js": CLIENT, ...files };
  const server = createServer((req, res) => {
    const file = routes[new URL(req.url, "http://x").pathname];
    if (!file) return res.writeHead(404).end();
    res.writeHead(200, { "content-type": TYPES[file.slice(file.lastIndexOf("."))] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  // "localhost" against the host's 127.0.0.1: another origin, as app.example.com is to rt.example.com.
  const origin = `http://localhost:${server.address().port}`;
  return { origin, close: () => closeServer(server) };
}

/**
 * A proxy to `target` (host:port) that forwards every plain request and streams the answer,
 * but answers a WebSocket upgrade with what the host says to the same request stripped of
 * its upgrade headers, as a proxy that drops them does.
 */
export async function brokenProxy(target) {
  const [hostname, port] = target.split(":");
  const forward = (req, headers, onResponse) => {
    const upstream = request({ hostname, port, path: req.url, method: req.method, headers }, onResponse);
    req.pipe(upstream);
    return upstream;
  };
  const server = createServer((req, res) => {
    forward(req, req.headers, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    }).on("error", () => res.destroy());
  });
  server.on("upgrade", (req, socket) => {
    const { upgrade, connection, ...headers } = req.headers;
    forward(req, headers, (answer) => {
      const head = Object.entries(answer.headers).map(([k, v]) => `${k}: ${v}`);
      socket.write(`HTTP/1.1 ${answer.statusCode} ${answer.statusMessage}\r\n${head.join("\r\n")}\r\n\r\n`);
      answer.pipe(socket);
    }).on("error", () => socket.destroy());
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => closeServer(server) };
}

/** Stops `server`, open streams included. */
function closeServer(server) {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(resolve));
}
