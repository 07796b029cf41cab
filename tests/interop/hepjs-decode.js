#!/usr/bin/env node
// Independent HEP3 decoder for heptap's interop tests: hep-js (sipcapture) decodes what heptap
// sends. Binds UDP 127.0.0.1:0 (or --listen host:port), prints {"listening":<port>} first, then one
// JSON line per datagram: {"rcinfo":{...},"payload":"..."} exactly as HEPjs.decapsulate returns
// it, or {"error":"..."} when hep-js rejects the packet. Exits when stdin closes or after
// --count N datagrams.
//
// Chunk 0x0065 (OpenSIPS's extra correlation, which heptap emits in JSON mode) has no name in
// hep-js; it is registered as a vendor-0 extension so that it shows up as rcinfo.extra_correlation.
'use strict';

const dgram = require('dgram');
const HEPjs = require('hep-js');

HEPjs.addVendorExtensions({ 0: { 101: { keyName: 'extra_correlation' } } });

function parseArgs(argv) {
  const args = { host: '127.0.0.1', port: 0, count: Infinity };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--count') {
      args.count = Number.parseInt(argv[++i], 10);
      if (!(args.count > 0)) fail(`--count needs a positive number`);
    } else if (a === '--listen') {
      const v = argv[++i] || '';
      const at = v.lastIndexOf(':');
      if (at < 0) fail(`--listen needs host:port, got "${v}"`);
      args.host = v.slice(0, at);
      args.port = Number.parseInt(v.slice(at + 1), 10);
    } else {
      fail(`unknown argument "${a}" (usage: hepjs-decode.js [--listen host:port] [--count N])`);
    }
  }
  return args;
}

function fail(msg) {
  process.stderr.write(`hepjs-decode: ${msg}\n`);
  process.exit(2);
}

function line(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const args = parseArgs(process.argv.slice(2));
const socket = dgram.createSocket('udp4');
let seen = 0;

function finish() {
  socket.close();
  process.stdin.destroy();
}

socket.on('error', (err) => fail(`socket: ${err.message}`));
socket.on('message', (msg) => {
  let decoded;
  try {
    decoded = HEPjs.decapsulate(msg);
  } catch (err) {
    decoded = false;
  }
  if (decoded === false) {
    line({ error: `hep-js could not decode ${msg.length} bytes` });
  } else if (decoded === undefined) {
    line({ error: `hep-js found no chunks in ${msg.length} bytes` });
  } else {
    line(decoded);
  }
  seen += 1;
  if (seen >= args.count) finish();
});
socket.bind(args.port, args.host, () => {
  line({ listening: socket.address().port });
});

process.stdin.on('end', finish);
process.stdin.on('error', finish);
process.stdin.resume();
