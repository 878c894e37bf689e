// Jobs v2 against the emulator with the official Node service SDK (azure-iothub `JobClient`,
// and `Registry.createQuery` for `SELECT * FROM devices.jobs`) while the official Node device
// SDK (azure-iot-device over MQTT) answers the method and receives the desired patch.
//
// Run by ../run.sh with HUB_JSON and DATA_DIR set. Ends with "N passed, M failed"; exit status
// 0 only if nothing failed.
'use strict';

const fs = require('fs');
const { JobClient, Registry } = require('azure-iothub');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { check, assert, withTimeout, closeQuietly, finish } = require('./harness');

const hub = JSON.parse(fs.readFileSync(process.env.HUB_JSON, 'utf8'));
const owner = hub.connection_strings.iothubowner;
const registry = Registry.fromConnectionString(owner);
const jobs = JobClient.fromConnectionString(owner);
const ON = 'node-job-on';
const OFF = 'node-job-off';
const TARGETS = `deviceId IN ['${ON}', '${OFF}']`;
const cell = (scenario) => ({ scenarios: [scenario], transport: 'MQTT' });

async function until(what, fn, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

async function finished(jobId) {
  return until(`job ${jobId} to finish`, async () => {
    const { jobStatus } = await jobs.getJob(jobId);
    return ['completed', 'failed', 'cancelled'].includes(jobStatus.status) ? jobStatus : null;
  });
}

async function status(fn) {
  try {
    await fn();
  } catch (e) {
    return e.response ? e.response.statusCode : `no status: ${e}`;
  }
  return 'no error';
}

(async () => {
  const { responseBody: device } = await registry.create({ deviceId: ON });
  await registry.create({ deviceId: OFF });
  const client = DeviceClient.fromConnectionString(
    `HostName=${hub.hostname};DeviceId=${ON};SharedAccessKey=${device.authentication.symmetricKey.primaryKey}`,
    Mqtt,
  );
  await client.open();
  const calls = [];
  client.onDeviceMethod('reboot', (request, response) => {
    calls.push(request.payload);
    response.send(200, { echo: request.payload }, () => {});
  });
  const desired = [];
  const twin = await client.getTwin();
  twin.on('properties.desired', (patch) => desired.push(patch));

  await check('JobClient: scheduleTwinUpdate reaches the Node device\'s desired properties', cell('jobs: twin update'), async () => {
    const { jobStatus } = await jobs.scheduleTwinUpdate('node-twin', TARGETS, { tags: { wave: 3 }, properties: { desired: { interval: 33 } } }, new Date(), 60);
    assert(jobStatus.jobId === 'node-twin' && jobStatus.type === 'scheduleUpdateTwin', JSON.stringify(jobStatus));
    const done = await finished('node-twin');
    assert(done.status === 'completed' && done.deviceJobStatistics.succeededCount === 2, JSON.stringify(done));
    await until('the desired patch', () => desired.some((p) => p.interval === 33), 15000);
  });

  await check('JobClient: scheduleDeviceMethod invokes the Node device; the offline device fails', cell('jobs: direct method'), async () => {
    await jobs.scheduleDeviceMethod('node-method', TARGETS, { methodName: 'reboot', payload: { delay: 4 }, responseTimeoutInSeconds: 10 }, new Date(), 60);
    const done = await finished('node-method');
    const stats = done.deviceJobStatistics;
    assert(done.status === 'completed' && stats.succeededCount === 1 && stats.failedCount === 1, JSON.stringify(done));
    assert(calls.some((p) => p && p.delay === 4), JSON.stringify(calls));
    const query = registry.createQuery("SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'node-method'");
    const { result: rows, message } = await query.next();
    assert(message.headers['x-ms-item-type'] === 'DeviceJob', `item type ${message.headers['x-ms-item-type']}`);
    const on = rows.find((r) => r.deviceId === ON);
    const off = rows.find((r) => r.deviceId === OFF);
    assert(on.status === 'completed' && on.outcome.deviceMethodResponse.payload.echo.delay === 4, JSON.stringify(on));
    assert(off.status === 'failed' && off.error.code === 'DeviceNotOnline', JSON.stringify(off));
  });

  await check('JobClient: createQuery by type and status with paging', cell('jobs: query'), async () => {
    // Other scenarios share the hub: look at this scenario's jobs only.
    const mine = (list) => list.map((j) => j.jobId).filter((id) => id.startsWith('node-'));
    const { result } = await jobs.createQuery('scheduleDeviceMethod', 'completed').next();
    assert(result.every((j) => j.type === 'scheduleDeviceMethod' && j.status === 'completed'), JSON.stringify(result));
    assert(JSON.stringify(mine(result)) === '["node-method"]', JSON.stringify(result));
    const paged = jobs.createQuery(undefined, undefined, 1);
    const seen = [];
    // `next()` without a token starts over; the SDK's own `nextAsTwin` passes the last token.
    for (let pages = 0; paged.hasMoreResults; pages += 1) {
      assert(pages < 100, 'the continuation never ended');
      const { result: page } = await paged.next(paged.continuationToken);
      assert(page.length <= 1, `page of ${page.length}`);
      seen.push(...page);
    }
    assert(JSON.stringify(mine(seen)) === JSON.stringify(['node-twin', 'node-method']), JSON.stringify(mine(seen)));
  });

  await check('JobClient: cancelJob of a scheduled job', cell('jobs: cancel'), async () => {
    const later = new Date(Date.now() + 3600 * 1000);
    const { jobStatus } = await jobs.scheduleTwinUpdate('node-later', TARGETS, { tags: { later: true } }, later, 60);
    assert(jobStatus.status === 'scheduled', JSON.stringify(jobStatus));
    const { jobStatus: cancelled } = await jobs.cancelJob('node-later');
    assert(cancelled.status === 'cancelled', JSON.stringify(cancelled));
    const { jobStatus: read } = await jobs.getJob('node-later');
    assert(read.status === 'cancelled', JSON.stringify(read));
  });

  await check('JobClient: unknown job 404, duplicate id 409, malformed condition 400', cell('jobs: errors'), async () => {
    assert((await status(() => jobs.getJob('node-nope'))) === 404, 'unknown job');
    assert((await status(() => jobs.scheduleTwinUpdate('node-twin', TARGETS, { tags: { a: 1 } }))) === 409, 'duplicate id');
    assert((await status(() => jobs.scheduleTwinUpdate('node-bad', "deviceId = = 'x'", { tags: { a: 1 } }))) === 400, 'malformed condition');
  });

  await closeQuietly(client);
  finish();
})().catch((e) => {
  console.log(`FAIL  setup: ${e && e.stack ? e.stack : e}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
});
