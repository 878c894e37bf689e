// The official Node TPM security client against the emulator's Device Provisioning Service:
// azure-iot-security-tpm 1.9.3 (on tss.js 2.0.0) with azure-iot-provisioning-device 1.9.1 and
// azure-iot-provisioning-device-http 1.9.1, azure-iot-provisioning-service 1.11.2 for the
// enrollment, all unmodified. Node's provisioning AMQP transport has no TPM support upstream
// (only HTTPS does), so HTTPS is the only column.
//
// The TPM is swtpm (`swtpm socket --tpm2 --server type=tcp`), started here on free ports in a
// temporary directory. tss.js's simulator mode (`new Tpm(true, host, port)`) opens with the
// Microsoft simulator's handshake and platform port, which swtpm does not answer; its
// user-mode TRM mode (`TpmTcpDevice(host, port, true)`, the one tss.js itself falls back to on
// Linux) sends only the simulator's SendCommand framing, which swtpm speaks: the scenario gives
// the security client a Tpm whose device is that one. ffi-napi and ref-napi, which tss.js only
// loads for Windows' TBS, do not build on current Node: run.sh installs with --ignore-scripts.
//
// The check reads the EK and registration id with the Node client, creates a TPM individual
// enrollment, registers over HTTPS (the 401 challenge, ActivateCredential and the identity key
// imported into the TPM by the SDK), checks the assignment, then connects azure-iot-device to
// the hub with TpmAuthenticationProvider (SAS tokens signed inside the TPM) and sends one
// message the emulator's monitor must see.
//
// Run by ../run.sh like dps.js (HUB_JSON, DATA_DIR, AZURE_IOT_BIN, NODE_EXTRA_CA_CERTS).
// Skipped (not failed) when swtpm is not installed. Ends with "N passed, M failed".
'use strict';

const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { spawn, execFileSync } = require('child_process');
const { Tpm, TpmTcpDevice } = require('tss.js');
const { TpmSecurityClient, TpmAuthenticationProvider } = require('azure-iot-security-tpm');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http: DpsHttp } = require('azure-iot-provisioning-device-http');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { check, skip, assert, withTimeout, closeQuietly, finish } = require('./harness');

const hub = JSON.parse(fs.readFileSync(process.env.HUB_JSON, 'utf8'));
const dps = { host: hub.dps.global_endpoint.replace(/:\d+$/, ''), idScope: hub.dps.id_scope, connectionString: hub.dps.connection_string };
const service = ProvisioningServiceClient.fromConnectionString(dps.connectionString);

// A port nobody listens on (0 if it could not bind).
function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(0));
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function canBind(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function connects(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

// Starts swtpm on a free command port P (control port P + 1) in a temporary state directory
// and waits (at most 10 s) until it accepts connections: {port, process, dir}.
async function startSwtpm() {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await freePort();
    if (!port || port > 65534 || !(await canBind(port + 1))) continue;
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpm-conformance-'));
    const child = spawn('swtpm', ['socket', '--tpm2',
      '--server', `type=tcp,port=${port}`, '--ctrl', `type=tcp,port=${port + 1}`,
      '--flags', 'not-need-init,startup-clear', '--tpmstate', `dir=${dir}`], { stdio: 'inherit' });
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline && child.exitCode === null) {
      if (await connects(port)) return { port, process: child, dir };
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    child.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  throw new Error('swtpm did not start');
}

// The Node TPM security client on swtpm's command port (see the header for the device mode).
function securityClient(port) {
  const tpm = new Tpm(true, '127.0.0.1', port);
  tpm.device = new TpmTcpDevice('127.0.0.1', port, true);
  return new TpmSecurityClient(undefined, tpm);
}

const call = (fn) => new Promise((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));

function monitored(deviceId, count) {
  const out = execFileSync(process.env.AZURE_IOT_BIN, [
    'hub', 'monitor-events', '--output', 'json', '--from-start', '--device-id', deviceId,
    '--count', String(count), '--timeout', '10', '--data-dir', process.env.DATA_DIR,
  ]);
  return out.toString().split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

async function tpmIndividual(port) {
  const security = securityClient(port);
  const ek = await withTimeout(call((cb) => security.getEndorsementKey(cb)), 30000, 'the EK from the TPM');
  const rid = await call((cb) => security.getRegistrationId(cb));
  assert(/^[a-z2-7]{52}$/.test(rid), `registration id ${rid} is not the base32 of the EK's SHA-256`);
  await service.createOrUpdateIndividualEnrollment({
    registrationId: rid,
    attestation: { type: 'tpm', tpm: { endorsementKey: ek.toString('base64') } },
  });
  const client = ProvisioningDeviceClient.create(dps.host, dps.idScope, new DpsHttp(), security);
  // The TPM flow resolves with DPS's whole operation response (its `registrationState` is
  // what the symmetric-key and X.509 flows resolve with).
  const response = await withTimeout(client.register(), 60000, 'the TPM registration over HTTPS');
  assert(response.status === 'assigned', `status ${response.status} (${JSON.stringify(response)})`);
  const result = response.registrationState;
  assert(result.assignedHub === hub.hostname, `assignedHub ${result.assignedHub}, not ${hub.hostname} (${JSON.stringify(result)})`);
  assert(result.deviceId === rid, `deviceId ${result.deviceId}, not ${rid}`);
  assert(result.substatus === 'initialAssignment', `substatus ${result.substatus}, not initialAssignment`);

  // The hub: SAS tokens signed by the identity key the SDK imported into the TPM.
  const auth = TpmAuthenticationProvider.fromTpmSecurityClient(result.deviceId, result.assignedHub, security);
  const device = DeviceClient.fromAuthenticationProvider(auth, Mqtt);
  const body = `tpm ${rid}`;
  try {
    await withTimeout(device.open(), 20000, 'the device client to open with TPM-signed tokens');
    await withTimeout(device.sendEvent(new Message(body)), 20000, 'the telemetry message to be accepted');
  } finally {
    await closeQuietly(device);
  }
  const events = monitored(rid, 1);
  assert(events.length === 1 && events[0].body === body, `monitor-events saw ${JSON.stringify(events)}`);
}

(async () => {
  const name = 'DPS TPM (swtpm), individual enrollment, over HTTPS; telemetry to the assigned hub with TPM-signed tokens';
  let swtpm = null;
  try {
    execFileSync('swtpm', ['--version'], { stdio: 'ignore' });
  } catch (e) {
    skip(name, 'swtpm is not installed');
    finish();
    return;
  }
  try {
    await check(name, { scenarios: ['DPS: TPM, individual'], transport: 'HTTPS' }, async () => {
      swtpm = await startSwtpm();
      await tpmIndividual(swtpm.port);
    });
  } finally {
    if (swtpm) {
      swtpm.process.kill();
      fs.rmSync(swtpm.dir, { recursive: true, force: true });
    }
  }
  finish();
})();
