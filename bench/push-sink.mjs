// A loopback stand-in for the push providers, for bench/push.sh: answers every Web Push
// POST 201, FCM's token endpoint and messages:send 200, and APNs (HTTP/2 over TLS with the
// given certificate) 200, counting what each got. `GET /count` on the HTTP port answers
// {"web": N, "fcm": N, "apns": N}. It checks nothing: the tests check the requests.
//
//   node bench/push-sink.mjs HTTP_PORT APNS_PORT CERT.pem KEY.pem
import { createServer } from "node:http";
import { createSecureServer } from "node:http2";
import { readFileSync } from "node:fs";

const [httpPort, apnsPort, cert, key] = process.argv.slice(2);
const count = { web: 0, fcm: 0, apns: 0 };

createServer((req, res) => {
  if (req.method === "GET") return res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(count));
  req.resume();
  req.on("end", () => {
    if (req.url === "/token") {
      res.writeHead(200, { "content-type": "application/json" });
      return res.end(JSON.stringify({ access_token: "ya29.bench", expires_in: 3599, token_type: "Bearer" }));
    }
    if (req.url.startsWith("/v1/projects/")) {
      count.fcm += 1;
      return res.writeHead(200, { "content-type": "application/json" }).end('{"name":"projects/p/messages/1"}');
    }
    count.web += 1;
    res.writeHead(201).end();
  });
}).listen(Number(httpPort), "127.0.0.1");

createSecureServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
  req.resume();
  req.on("end", () => {
    count.apns += 1;
    res.writeHead(200, { "apns-id": "bench" }).end();
  });
}).listen(Number(apnsPort), "127.0.0.1");
