// Benchmark peer: telemetry throughput of the official Node device SDK (azure-iot-device with
// the azure-iot-device-mqtt transport, azure-iot-device-amqp with TRANSPORT=amqp, or
// azure-iot-device-http with TRANSPORT=https; versions
// pinned in package.json beside this file).
//
//   node node_sdk.js seq N          one message at a time, each awaited
//   node node_sdk.js conc N [BATCH] BATCH sends kept in flight (default 100)
//
// Environment: CS (device connection string), CA_FILE (PEM of the hub's CA), T0_NS (optional:
// the epoch nanoseconds at which the harness started this process, so that import_ms and
// connect_ms count Node's start-up too).
//
// Each message is what bench_telemetry and rustraw send: a 100-byte body (the index in 8
// digits, then 'x' padding) with the application properties prop1=value1 and prop2=value2,
// QoS 1. The SDK always dials port 8883 (MQTT) or 5671 (AMQP) of the connection string's host.
//
// Prints one line on stdout, as the other peers do and bench/device.sh reads it:
//   RESULT {"client", "mode", "n", "batch", "import_ms", "connect_ms", "send_s",
//           "msgs_per_s", "send_cpu_s", "peak_rss_kib"}
// On any failure: the error on stderr, exit status 1, no RESULT line.
'use strict';

const nowNs = () => BigInt(Date.now()) * 1000000n;
const startNs = process.env.T0_NS ? BigInt(process.env.T0_NS) : nowNs();
const fs = require('fs');
const { Client, Message } = require('azure-iot-device');
const transports = {
  amqp: ['azure-iot-device-amqp', 'Amqp'],
  https: ['azure-iot-device-http', 'Http'],
  mqtt: ['azure-iot-device-mqtt', 'Mqtt'],
};
const [transportPackage, transportName] = transports[process.env.TRANSPORT || 'mqtt'] || transports.mqtt;
const Transport = require(transportPackage)[transportName];
const importedNs = nowNs();

const sinceStartMs = (ns) => Math.round(Number(ns - startNs) / 1e5) / 10;
// CPU seconds (user + system) of this process so far.
const cpuSeconds = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};

function telemetry(index) {
  const message = new Message(String(index).padStart(8, '0').padEnd(100, 'x'));
  message.properties.add('prop1', 'value1');
  message.properties.add('prop2', 'value2');
  return message;
}

// Sends n messages, `inFlight` at a time: that many senders each take the next index as soon
// as their previous message is acknowledged (a sliding window, like bench_telemetry's `conc`,
// not batches that wait for their slowest). With inFlight 1 it awaits each message.
async function sendAll(client, n, inFlight) {
  let next = 0;
  const sender = async () => {
    while (next < n) {
      const index = next;
      next += 1;
      await client.sendEvent(telemetry(index)); // resolves on the PUBACK (AMQP: disposition)
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, sender));
}

async function main(argv) {
  const [mode, count, size] = argv;
  if (mode !== 'seq' && mode !== 'conc') throw new Error('usage: node_sdk.js seq N | conc N [BATCH]');
  const n = Number(count);
  const batch = mode === 'seq' ? 1 : Number(size || 100);
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(batch) || batch < 1) {
    throw new Error('N and BATCH must be whole numbers of at least 1');
  }
  const client = Client.fromConnectionString(process.env.CS, Transport);
  // azure-iot-device-http 1.14.4's setOptions never settles its promise (the process then
  // exits silently with nothing pending): over HTTPS the CA comes from NODE_EXTRA_CA_CERTS.
  if (transportName !== 'Http') {
    await client.setOptions({ ca: fs.readFileSync(process.env.CA_FILE, 'utf8') });
  }
  let connectedNs;
  let elapsed;
  let cpu;
  try {
    await client.open();
    connectedNs = nowNs();
    const cpu0 = cpuSeconds();
    const t0 = process.hrtime.bigint();
    await sendAll(client, n, batch);
    elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
    cpu = cpuSeconds() - cpu0;
  } finally {
    // A close that fails after a failed open must not hide why the open failed.
    await client.close().catch(() => {});
  }
  const version = (name) => require(`${name}/package.json`).version;
  const result = {
    client: `azure-iot-device ${version('azure-iot-device')} + ${transportPackage} ${version(transportPackage)}`,
    mode,
    n,
    batch,
    import_ms: sinceStartMs(importedNs),
    connect_ms: sinceStartMs(connectedNs),
    send_s: Math.round(elapsed * 1e4) / 1e4,
    msgs_per_s: Math.round((n / elapsed) * 10) / 10,
    send_cpu_s: Math.round(cpu * 1e3) / 1e3,
    peak_rss_kib: process.resourceUsage().maxRSS,
  };
  console.log(`RESULT ${JSON.stringify(result)}`);
}

main(process.argv.slice(2)).catch((e) => {
  console.error(`node_sdk.js: ${e && e.message ? e.message : e}`);
  process.exit(1);
});
