// Configurations (automatic device management) with the official Node service SDK
// (azure-iothub 1.16.6 `Registry`: addConfiguration, getConfiguration, getConfigurations,
// updateConfiguration, removeConfiguration, applyConfigurationContentOnDevice) against the
// emulator, unmodified, with a device over MQTT (azure-iot-device 1.18.4) receiving the
// configuration's desired patch; then the same calls through this project's service client
// (`azure-iot configuration ...`, AZURE_IOT_BIN). Also the import/export devices jobs
// (`exportDevicesToBlob`, `importDevicesFromBlob`, `getJob`, `listJobs`) into a container on the
// emulator's blob endpoint (`azure-iot hub container-sas` mints its SAS URI).
//
// Run by ../run.sh with HUB_JSON, DATA_DIR and AZURE_IOT_BIN set and NODE_EXTRA_CA_CERTS
// naming the emulator's ca.pem. Ends with "N passed, M failed".
'use strict';

const fs = require('fs');
const { execFileSync } = require('child_process');
const { Registry } = require('azure-iothub');
const { Client: DeviceClient } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { check, assert, withTimeout, kind, thrown, closeQuietly, finish } = require('./harness');

const hub = JSON.parse(fs.readFileSync(process.env.HUB_JSON, 'utf8'));
const registry = Registry.fromConnectionString(hub.connection_strings.iothubowner);
const cell = (scenarios, client) => ({ scenarios, transport: 'HTTPS', client });

function configuration(id, targetCondition, priority, deviceContent) {
  return { id, content: { deviceContent }, targetCondition, priority, labels: { origin: 'conformance' } };
}

// The twin's desired properties once `accept` holds for them (the emulator applies a
// configuration before answering, so this normally returns on the first read).
async function desiredOf(deviceId, accept) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const twin = (await registry.getTwin(deviceId)).responseBody;
    const desired = twin.properties.desired;
    if (accept(desired)) return desired;
    assert(Date.now() < deadline, `desired of ${deviceId} never satisfied the check: ${JSON.stringify(desired)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// `azure-iot args…` against the emulator of DATA_DIR; stdout as text.
function cli(args) {
  return execFileSync(process.env.AZURE_IOT_BIN, [...args, '--data-dir', process.env.DATA_DIR], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

(async () => {
  await check('configurations: add, get, list, update with etag, remove (Registry)', cell(['configurations: CRUD with ETags']), async () => {
    const added = (await registry.addConfiguration(configuration('node-cfg-1', "tags.env='conf'", 3, { 'properties.desired.settings.mode': 'eco' }))).responseBody;
    assert(added.etag && added.createdTimeUtc, `created with etag and creation time: ${JSON.stringify(added)}`);
    assert(added.schemaVersion === '1.0', `schemaVersion ${added.schemaVersion}`);
    const duplicate = await thrown(() => registry.addConfiguration(configuration('node-cfg-1', '*', 1, { 'properties.desired.x': 1 })));
    assert(duplicate && duplicate.constructor.name === 'DeviceAlreadyExistsError', `409 as the SDK maps it, got ${kind(duplicate)}`);
    const got = (await registry.getConfiguration('node-cfg-1')).responseBody;
    assert(got.id === 'node-cfg-1' && got.priority === 3 && got.labels.origin === 'conformance', JSON.stringify(got));
    const listed = (await registry.getConfigurations()).responseBody;
    assert(Array.isArray(listed) && listed.some((c) => c.id === 'node-cfg-1'), `listed: ${JSON.stringify(listed)}`);

    got.priority = 7;
    const updated = (await registry.updateConfiguration(got)).responseBody;
    assert(updated.priority === 7 && updated.etag !== got.etag, `updated: ${JSON.stringify(updated)}`);
    got.priority = 8; // still the old etag
    const stale = await thrown(() => registry.updateConfiguration(got));
    assert(stale && stale.constructor.name === 'InvalidEtagError', `412 as InvalidEtagError, got ${kind(stale)}`);
    updated.targetCondition = "tags.env='other'";
    const forced = (await registry.updateConfiguration(updated, true)).responseBody;
    assert(forced.targetCondition === "tags.env='other'", JSON.stringify(forced));

    await registry.removeConfiguration('node-cfg-1');
    const missing = await thrown(() => registry.getConfiguration('node-cfg-1'));
    // The SDK names only DeviceNotFound and IotHubNotFound; other 404 codes are a plain Error.
    assert(missing && missing.message === 'Not found' && missing.response && missing.response.statusCode === 404, `404 as the SDK maps it, got ${kind(missing)}`);
  });

  await check('configurations: applied to the targeted twin by priority, desired patch received over MQTT, metrics', cell(['configurations: applied to twins, metrics']), async () => {
    const { responseBody: device } = await registry.create({ deviceId: 'node-cfg-dev' });
    await registry.updateTwin('node-cfg-dev', { tags: { env: 'conf' } }, '*');
    const client = DeviceClient.fromConnectionString(
      `HostName=${hub.hostname};DeviceId=node-cfg-dev;SharedAccessKey=${device.authentication.symmetricKey.primaryKey}`, Mqtt);
    try {
      await client.open();
      const twin = await client.getTwin();
      const patched = new Promise((resolve) => {
        twin.on('properties.desired', (desired) => { if (desired.interval === 5) resolve(desired); });
      });
      const low = configuration('node-cfg-low', "tags.env='conf'", 1, { 'properties.desired.interval': 60, 'properties.desired.unit': 's' });
      low.metrics = { queries: { reporting: "SELECT deviceId FROM devices WHERE properties.reported.interval = 5" } };
      await registry.addConfiguration(low);
      // Both target only this scenario's device: the suite shares one emulator, so '*' would
      // count every other scenario's devices in the metrics.
      await registry.addConfiguration(configuration('node-cfg-high', "tags.env='conf'", 10, { 'properties.desired.interval': 5 }));
      await withTimeout(patched, 10000, 'the desired patch of the higher priority configuration');
      const desired = await desiredOf('node-cfg-dev', (d) => d.interval === 5 && d.unit === 's');
      assert(desired.unit === 's', 'the lower priority configuration keeps the path nobody else sets');
      await new Promise((resolve, reject) => twin.properties.reported.update({ interval: 5 }, (e) => (e ? reject(e) : resolve())));
      const high = (await registry.getConfiguration('node-cfg-high')).responseBody;
      assert(high.systemMetrics.results.targetedCount === 1 && high.systemMetrics.results.appliedCount === 1, JSON.stringify(high.systemMetrics));
      const lowRead = (await registry.getConfiguration('node-cfg-low')).responseBody;
      assert(lowRead.metrics.results.reporting === 1, `custom metric: ${JSON.stringify(lowRead.metrics)}`);
      await registry.removeConfiguration('node-cfg-high');
      await desiredOf('node-cfg-dev', (d) => d.interval === 60);
      await registry.removeConfiguration('node-cfg-low');
      await desiredOf('node-cfg-dev', (d) => d.interval === undefined && d.unit === undefined);
    } finally {
      await closeQuietly(client);
    }
  });

  await check('configurations: a target condition that does not parse is refused (Registry)', cell(['configurations: bad input refused']), async () => {
    const bad = await thrown(() => registry.addConfiguration(configuration('node-cfg-bad', "tags.env = = 'x'", 1, { 'properties.desired.x': 1 })));
    assert(bad && bad.constructor.name === 'ArgumentError', `400 as ArgumentError, got ${kind(bad)}`);
    const reported = await thrown(() => registry.addConfiguration(configuration('node-cfg-bad', '*', 1, { 'properties.reported.x': 1 })));
    assert(reported && reported.constructor.name === 'ArgumentError', `content outside properties.desired: ${kind(reported)}`);
    const listed = (await registry.getConfigurations()).responseBody;
    assert(!listed.some((c) => c.id === 'node-cfg-bad'), 'nothing stored');
  });

  await check('configurations: applyConfigurationContentOnDevice writes the edge module twins (Registry)', cell(['configurations: apply content to an edge device']), async () => {
    await registry.create({ deviceId: 'node-cfg-edge', capabilities: { iotEdge: true } });
    await registry.applyConfigurationContentOnDevice('node-cfg-edge', {
      modulesContent: {
        $edgeAgent: { 'properties.desired': { schemaVersion: '1.1', runtime: { type: 'docker' } } },
        $edgeHub: { 'properties.desired': { schemaVersion: '1.1', routes: { up: 'FROM /* INTO $upstream' } } },
      },
    });
    const agent = (await registry.getModuleTwin('node-cfg-edge', '$edgeAgent')).responseBody;
    assert(agent.properties.desired.runtime.type === 'docker', JSON.stringify(agent.properties.desired));
    const edgeHub = (await registry.getModuleTwin('node-cfg-edge', '$edgeHub')).responseBody;
    assert(edgeHub.properties.desired.routes.up === 'FROM /* INTO $upstream', JSON.stringify(edgeHub.properties.desired));
  });

  await check('import/export: exportDevicesToBlob, delete, importDevicesFromBlob restores the device (Registry)', cell(['import/export devices jobs']), async () => {
    const { responseBody: device } = await registry.create({ deviceId: 'node-export-1' });
    await registry.updateTwin('node-export-1', { tags: { kept: true } }, '*');
    const uri = cli(['hub', 'container-sas', '--name', 'node-export']).trim();
    const job = async (started) => {
      // The promise form resolves with the job or with {responseBody, httpResponse}.
      const first = started.jobId ? started : started.responseBody;
      assert(first && first.jobId, `a job id in what the SDK resolved with (keys: ${Object.keys(started)})`);
      const deadline = Date.now() + 20000;
      for (;;) {
        const got = await registry.getJob(first.jobId);
        const now = got.jobId ? got : got.responseBody;
        assert(now && now.status, `a job status (keys: ${Object.keys(got)})`);
        if (['completed', 'failed', 'cancelled'].includes(now.status)) return now;
        assert(Date.now() < deadline, `job ${first.jobId} still ${now.status}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const exported = await job(await registry.exportDevicesToBlob(uri, false));
    assert(exported.status === 'completed', `export: ${JSON.stringify(exported)}`);
    await registry.delete('node-export-1');
    const imported = await job(await registry.importDevicesFromBlob(uri, uri));
    assert(imported.status === 'completed', `import: ${JSON.stringify(imported)}`);
    const { responseBody: back } = await registry.get('node-export-1');
    assert(back.authentication.symmetricKey.primaryKey === device.authentication.symmetricKey.primaryKey, 'the same keys');
    const twin = (await registry.getTwin('node-export-1')).responseBody;
    assert(twin.tags.kept === true, `tags restored: ${JSON.stringify(twin.tags)}`);
    const listed = await registry.listJobs();
    const jobs = Array.isArray(listed) ? listed : listed.responseBody;
    assert(Array.isArray(jobs) && jobs.length >= 2, `listJobs gave ${jobs && jobs.length} jobs`);
  });

  // This project's service client, through the CLI, on the same scenarios.
  const ours = 'azure_iot_service (azure-iot)';
  await check('configurations: create, show, list, delete with this project\'s service client', cell(['configurations: CRUD with ETags', 'configurations: applied to twins, metrics'], ours), async () => {
    await registry.create({ deviceId: 'rust-cfg-dev' });
    await registry.updateTwin('rust-cfg-dev', { tags: { env: 'rust' } }, '*');
    const created = JSON.parse(cli(['configuration', 'create', '-c', 'rust-cfg', '--target-condition', "tags.env='rust'", '--priority', '2',
      '--content', JSON.stringify({ deviceContent: { 'properties.desired.interval': 15 } })]));
    assert(created.etag, JSON.stringify(created));
    await desiredOf('rust-cfg-dev', (d) => d.interval === 15);
    const shown = JSON.parse(cli(['configuration', 'show', '-c', 'rust-cfg']));
    assert(shown.systemMetrics.results.appliedCount === 1, JSON.stringify(shown.systemMetrics));
    const listed = JSON.parse(cli(['configuration', 'list']));
    assert(listed.some((c) => c.id === 'rust-cfg'), JSON.stringify(listed));
    // The Node SDK sees what our client wrote, and the other way round.
    const fromNode = (await registry.getConfiguration('rust-cfg')).responseBody;
    assert(fromNode.priority === 2, JSON.stringify(fromNode));
    const stale = await thrown(async () => cli(['configuration', 'delete', '-c', 'rust-cfg', '--etag', 'c3RhbGU=']));
    assert(stale && String(stale.stderr).includes('412'), `stale etag refused: ${stale && stale.stderr}`);
    cli(['configuration', 'delete', '-c', 'rust-cfg', '--etag', fromNode.etag]);
    await desiredOf('rust-cfg-dev', (d) => d.interval === undefined);
  });

  await check('import/export: export, delete, import with this project\'s service client (azure-iot device export|import)', cell(['import/export devices jobs'], ours), async () => {
    const { responseBody: device } = await registry.create({ deviceId: 'rust-export-1' });
    const uri = cli(['hub', 'container-sas', '--name', 'rust-export']).trim();
    const exported = JSON.parse(cli(['device', 'export', '--blob-container-uri', uri, '--wait']));
    assert(exported.status === 'completed', `export: ${exported.status} ${exported.failureReason}`);
    await registry.delete('rust-export-1');
    const imported = JSON.parse(cli(['device', 'import', '--input-blob-container-uri', uri, '--output-blob-container-uri', uri, '--wait']));
    assert(imported.status === 'completed', `import: ${imported.status} ${imported.failureReason}`);
    const { responseBody: back } = await registry.get('rust-export-1');
    assert(back.authentication.symmetricKey.primaryKey === device.authentication.symmetricKey.primaryKey, 'the same keys');
    // The job is visible to the Node SDK too.
    const got = await registry.getJob(imported.jobId);
    const job = got.jobId ? got : got.responseBody;
    assert(job.type === 'import' && job.status === 'completed', `getJob: ${job.type} ${job.status}`);
  });

  await check('configurations: bad input refused by this project\'s service client', cell(['configurations: bad input refused'], ours), async () => {
    const bad = await thrown(async () => cli(['configuration', 'create', '-c', 'rust-bad', '--target-condition', "tags.env = = 'x'",
      '--content', JSON.stringify({ deviceContent: { 'properties.desired.x': 1 } })]));
    assert(bad && String(bad.stderr).includes('400'), `refused: ${bad && bad.stderr}`);
    const listed = (await registry.getConfigurations()).responseBody;
    assert(!listed.some((c) => c.id === 'rust-bad'), 'nothing stored');
  });

  finish();
})();
