// A loopback reverse proxy that adds `Authorization: Bearer <token>` to
// every request and passes everything else through untouched: method,
// path, Host and Origin headers, bodies, and streamed (SSE) responses.
//
// The MCP conformance suite's client cannot send a bearer token, and
// delegate-host over HTTP refuses requests without one. Putting this in
// front lets the suite test the real server, its Host/Origin checks
// included, without a weaker mode in the product.
//
// usage: node auth_proxy.mjs TARGET_URL TOKEN
// Prints `listening <port>` on stdout once ready.

import http from "node:http";

const [target, token] = process.argv.slice(2);
if (!target || !token) {
  console.error("usage: auth_proxy.mjs TARGET_URL TOKEN");
  process.exit(2);
}
const upstream = new URL(target);

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: `Bearer ${token}` };
  const forward = http.request(
    {
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers,
    },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  forward.on("error", (err) => {
    if (!res.headersSent) {
      res.writeHead(502, { "content-type": "text/plain" });
    }
    res.end(`proxy: ${err.message}`);
  });
  res.on("close", () => forward.destroy());
  req.pipe(forward);
});

server.listen(0, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
