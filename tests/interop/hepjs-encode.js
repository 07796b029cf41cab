#!/usr/bin/env node
// Independent HEP3 encoder for heptap's interop tests: hep-js (sipcapture) builds the packets that
// heptap must read. Reads JSON lines {"payload":"...","rcinfo":{...}} on stdin, builds each with
// HEPjs.encapsulate, and sends it to --to [udp:|tcp:]host:port (one datagram per packet over UDP;
// one connection carrying every packet back to back over TCP) and/or prints it as hex with --hex.
// Exits at EOF once everything is sent.
//
// rcinfo.extra_correlation, when present, becomes chunk 0x0065 (OpenSIPS's extra correlation) via
// a vendor-0 extension, as heptap emits it in JSON mode.
'use strict';

const dgram = require('dgram');
const net = require('net');
const readline = require('readline');
const HEPjs = require('hep-js');

HEPjs.addVendorExtensions({ 0: { 101: { keyName: 'extra_correlation' } } });

function fail(msg) {
  process.stderr.write(`hepjs-encode: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { to: null, hex: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--hex') {
      args.hex = true;
    } else if (a === '--to') {
      let v = argv[++i] || '';
      let transport = 'udp';
      const m = /^(udp|tcp):(.*)$/.exec(v);
      if (m) {
        transport = m[1];
        v = m[2];
      }
      const at = v.lastIndexOf(':');
      const port = Number.parseInt(v.slice(at + 1), 10);
      if (at < 0 || !(port > 0 && port < 65536)) fail(`--to needs [udp:|tcp:]host:port, got "${argv[i]}"`);
      args.to = { transport, host: v.slice(0, at), port };
    } else {
      fail(`unknown argument "${a}" (usage: hepjs-encode.js [--to [udp:|tcp:]host:port] [--hex])`);
    }
  }
  if (!args.to && !args.hex) fail('nothing to do: give --to and/or --hex');
  return args;
}

function encode(text, lineNo) {
  let obj;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    fail(`line ${lineNo}: not JSON: ${err.message}`);
  }
  if (typeof obj.payload !== 'string' || typeof obj.rcinfo !== 'object' || obj.rcinfo === null) {
    fail(`line ${lineNo}: expected {"payload":"...","rcinfo":{...}}`);
  }
  return HEPjs.encapsulate(obj.payload, obj.rcinfo);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const packets = [];
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let lineNo = 0;
  for await (const text of rl) {
    lineNo += 1;
    if (text.trim() === '') continue;
    const buf = encode(text, lineNo);
    if (args.hex) process.stdout.write(buf.toString('hex') + '\n');
    packets.push(buf);
  }
  if (!args.to || packets.length === 0) return;
  const { transport, host, port } = args.to;
  if (transport === 'udp') {
    const socket = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    for (const buf of packets) {
      await new Promise((resolve, reject) =>
        socket.send(buf, port, host, (err) => (err ? reject(err) : resolve())),
      );
    }
    socket.close();
  } else {
    await new Promise((resolve, reject) => {
      const conn = net.createConnection({ host, port }, () => {
        conn.end(Buffer.concat(packets));
      });
      conn.on('error', reject);
      conn.on('close', resolve);
      conn.resume();
    });
  }
}

main().catch((err) => fail(err.message));
