// The official Node SDKs (azure-iothub 1.16.6 service client and registry, azure-iot-device
// 1.18.4 with azure-iot-device-mqtt 1.16.4) against the emulator, unmodified.
//
// Run by ../run.sh with HUB_JSON and DATA_DIR set and NODE_EXTRA_CA_CERTS pointing at the
// emulator's ca.pem. Prints one line per check and ends with "N passed, M failed".
'use strict';

const fs = require('fs');
const path = require('path');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Message: ServiceMessage } = require('azure-iot-common');

const hub = JSON.parse(fs.readFileSync(process.env.HUB_JSON, 'utf8'));
const owner = hub.connection_strings.iothubowner;
const registry = Registry.fromConnectionString(owner);
const results = [];

// Each check fills rows (scenarios) of one column (client, transport) of the table in
// docs/CONFORMANCE.md; results go to CONFORMANCE_RESULTS as JSON lines (see table.py).
async function check(name, cell, fn) {
  try {
    await fn();
    results.push([name, null, cell]);
    console.log(`ok    ${name}`);
  } catch (e) {
    results.push([name, e, cell]);
    console.log(`FAIL  ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function withTimeout(promise, ms, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)),
  ]);
}

async function deviceClient(deviceId) {
  const { responseBody: device } = await registry.create({ deviceId });
  const key = device.authentication.symmetricKey.primaryKey;
  const client = DeviceClient.fromConnectionString(
    `HostName=${hub.hostname};DeviceId=${deviceId};SharedAccessKey=${key}`,
    Mqtt,
  );
  await client.open();
  return client;
}

function logged(deviceId) {
  // The emulator's durable telemetry log (SQLite) is read with the sqlite3 shell-free route:
  // the monitor endpoint would do too, but the file is the record of what was acknowledged.
  const { execFileSync } = require('child_process');
  const out = execFileSync('python3', ['-c', `
import sqlite3, sys, json
db = sqlite3.connect(sys.argv[1])
rows = db.execute("SELECT properties, body FROM telemetry WHERE device_id = ? ORDER BY seq", (sys.argv[2],)).fetchall()
print(json.dumps([[p, b.decode("utf-8", "replace")] for p, b in rows]))
`, path.join(process.env.DATA_DIR, 'telemetry.db'), deviceId]);
  return JSON.parse(out.toString());
}

(async () => {
  await check('registry: create, get, update with etag, delete', { scenarios: ['registry CRUD'], transport: 'HTTPS' }, async () => {
    const { responseBody: created } = await registry.create({ deviceId: 'node-dev-1' });
    assert(created.authentication.symmetricKey.primaryKey.length === 44, 'generated key');
    const { responseBody: got } = await registry.get('node-dev-1');
    got.status = 'disabled';
    const { responseBody: updated } = await registry.update(got);
    assert(updated.status === 'disabled', 'status updated');
    let conflict = null;
    try { await registry.create({ deviceId: 'node-dev-1' }); } catch (e) { conflict = e; }
    assert(conflict && conflict.constructor.name === 'DeviceAlreadyExistsError', `409 maps to DeviceAlreadyExistsError, got ${conflict && conflict.constructor.name}`);
    await registry.delete('node-dev-1');
    let missing = null;
    try { await registry.get('node-dev-1'); } catch (e) { missing = e; }
    assert(missing && missing.constructor.name === 'DeviceNotFoundError', `404 maps to DeviceNotFoundError, got ${missing && missing.constructor.name}`);
  });

  await check('twin: update desired with etag, query with paging', { scenarios: ['twin: get, desired patch, reported', 'query with paging'], transport: 'HTTPS' }, async () => {
    for (let i = 0; i < 3; i++) await registry.create({ deviceId: `node-q-${i}` });
    const { responseBody: twin } = await registry.getTwin('node-q-0');
    const { responseBody: patched } = await registry.updateTwin('node-q-0', { tags: { floor: 2 }, properties: { desired: { fan: true } } }, twin.etag);
    assert(patched.properties.desired.fan === true && patched.tags.floor === 2, 'twin patched');
    const query = registry.createQuery("SELECT * FROM devices WHERE STARTSWITH(deviceId, 'node-q-')", 2);
    const ids = [];
    while (query.hasMoreResults) {
      const { result } = await query.nextAsTwin();
      ids.push(...result.map((t) => t.deviceId));
    }
    assert(JSON.stringify(ids) === JSON.stringify(['node-q-0', 'node-q-1', 'node-q-2']), `paged ids ${ids}`);
  });

  await check('device over MQTT: telemetry with properties, twin, reported patch, method', { scenarios: ['telemetry with properties', 'twin: get, desired patch, reported', 'direct method'], transport: 'MQTT' }, async () => {
    const client = await deviceClient('node-dev-2');
    const message = new Message('{"temperature":21.5}');
    message.messageId = 'mid-1';
    message.contentType = 'application/json';
    message.contentEncoding = 'utf-8';
    message.properties.add('k space', 'v/slash');
    await client.sendEvent(message);
    const rows = logged('node-dev-2');
    assert(rows.length === 1 && rows[0][1] === '{"temperature":21.5}', `logged ${JSON.stringify(rows)}`);
    assert(rows[0][0].includes('%24.mid=mid-1') && rows[0][0].includes('k%20space=v%2Fslash'), `properties ${rows[0][0]}`);

    const twin = await client.getTwin();
    assert(twin.properties.desired.$version === 1, 'desired version');
    await new Promise((resolve, reject) => twin.properties.reported.update({ state: 'ok' }, (e) => (e ? reject(e) : resolve())));
    const { responseBody: serviceTwin } = await registry.getTwin('node-dev-2');
    assert(serviceTwin.properties.reported.state === 'ok', 'reported state visible to the service');

    client.onDeviceMethod('reboot', (request, response) => response.send(200, { echo: request.payload }, () => {}));
    const service = ServiceClient.fromConnectionString(owner);
    const { result } = await service.invokeDeviceMethod('node-dev-2', { methodName: 'reboot', payload: { delay: 1 }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10 });
    assert(result.status === 200 && result.payload.echo.delay === 1, `method result ${JSON.stringify(result)}`);
    await client.close();
  });

  await check('cloud-to-device: service client over AMQP (no SASL, CBS), device over MQTT, feedback', { scenarios: ['cloud-to-device and feedback'], transport: 'MQTT' }, async () => {
    const client = await deviceClient('node-dev-3');
    const received = new Promise((resolve) => client.on('message', (msg) => { client.complete(msg, () => resolve(msg)); }));
    const service = ServiceClient.fromConnectionString(owner);
    await service.open();
    const c2d = new ServiceMessage('hello node');
    c2d.messageId = 'node-c2d-1';
    c2d.ack = 'full';
    c2d.properties.add('color', 'green');
    const feedback = new Promise((resolve, reject) => {
      service.getFeedbackReceiver((err, receiver) => {
        if (err) return reject(err);
        receiver.on('message', (msg) => resolve(JSON.parse(msg.getData().toString())));
      });
    });
    await service.send('node-dev-3', c2d);
    const msg = await withTimeout(received, 10000, 'the C2D message');
    assert(msg.getData().toString() === 'hello node', 'C2D body');
    assert(msg.properties.getValue('color') === 'green', 'C2D property');
    const records = await withTimeout(feedback, 10000, 'feedback');
    assert(records[0].originalMessageId === 'node-c2d-1' && records[0].statusCode === 'Success', `feedback ${JSON.stringify(records)}`);
    await service.close();
    await client.close();
  });

  if (process.env.CONFORMANCE_RESULTS) {
    const lines = results.flatMap(([name, e, cell]) => cell.scenarios.map((scenario) => JSON.stringify({
      scenario, client: 'Node SDKs', transport: cell.transport, check: name, passed: e === null,
    }) + '\n'));
    fs.appendFileSync(process.env.CONFORMANCE_RESULTS, lines.join(''));
  }
  const failed = results.filter(([, e]) => e !== null).length;
  console.log(`${results.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
