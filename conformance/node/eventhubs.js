// The official Event Hubs SDK for JavaScript (@azure/event-hubs 6.0.4, EventHubConsumerClient)
// reads the telemetry the official Node device SDK (azure-iot-device 1.18.4 over MQTT and over
// AMQP) sent, through the emulator's built-in Event Hubs-compatible endpoint, with the
// connection string hub.json announces (event_hubs.connection_string).
//
// Run by ../run.sh with HUB_JSON and DATA_DIR set and NODE_EXTRA_CA_CERTS pointing at the
// emulator's ca.pem. Prints one line per check and ends with "N passed, M failed".
'use strict';

const fs = require('fs');
const { EventHubConsumerClient } = require('@azure/event-hubs');
const { Registry } = require('azure-iothub');
const { Client: DeviceClient, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Amqp } = require('azure-iot-device-amqp');
const { check, assert, withTimeout, closeQuietly, finish } = require('./harness');
const { eh, consumer: newConsumer, read } = require('./hub_events');

const hub = JSON.parse(fs.readFileSync(process.env.HUB_JSON, 'utf8'));
const registry = Registry.fromConnectionString(hub.connection_strings.iothubowner);
const CLIENT = 'Node @azure/event-hubs';

// Sends `count` messages with every property the device SDK sets from `deviceId` over
// `transport`; returns the time just before.
async function sendTelemetry(deviceId, transport, count, tag) {
  let device;
  try {
    ({ responseBody: device } = await registry.create({ deviceId }));
  } catch (e) {
    ({ responseBody: device } = await registry.get(deviceId));
  }
  const key = device.authentication.symmetricKey.primaryKey;
  const client = DeviceClient.fromConnectionString(
    `HostName=${hub.hostname};DeviceId=${deviceId};SharedAccessKey=${key}`, transport);
  await client.open();
  const before = new Date(Date.now() - 5);
  for (let n = 0; n < count; n++) {
    const m = new Message(JSON.stringify({ n, tag }));
    m.messageId = `${tag}-${n}`;
    m.correlationId = `corr-${tag}`;
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.properties.add('n', String(n));
    m.properties.add('tag', tag);
    await client.sendEvent(m);
  }
  await closeQuietly(client);
  return before;
}

// The partition whose newest event is the newest of all (the one just sent to), and that
// event's sequence number.
async function newestPartition(client) {
  let best = null;
  for (const id of await client.getPartitionIds()) {
    const p = await client.getPartitionProperties(id);
    if (!p.isEmpty && (!best || p.lastEnqueuedOnUtc > best.lastEnqueuedOnUtc)) best = p;
  }
  return best;
}

(async () => {
  const consumer = newConsumer();
  const device = 'eh-node-dev';
  const start = await sendTelemetry(device, Mqtt, 3, 'mqtt');
  const partition = await newestPartition(consumer);
  const last = partition.lastEnqueuedSequenceNumber;
  const first = last - 2;

  await check('Event Hubs endpoint: entity and partition properties ($management)', { client: CLIENT, transport: 'AMQP', scenarios: ['Event Hubs endpoint: entity and partition properties ($management)'] }, async () => {
    const props = await consumer.getEventHubProperties();
    assert(props.name === eh.entity_path, `name ${props.name}`);
    assert(JSON.stringify(props.partitionIds) === JSON.stringify([...Array(eh.partitions).keys()].map(String)), `ids ${props.partitionIds}`);
    assert(partition.partitionId && !partition.isEmpty, JSON.stringify(partition));
    assert(Number(partition.lastEnqueuedOffset) >= 0, `offset ${partition.lastEnqueuedOffset}`);
  });

  await check('Event Hubs endpoint: read device telemetry (MQTT) from the start, with every property and annotation', { client: CLIENT, transport: 'AMQP', scenarios: ['Event Hubs endpoint: read device telemetry from the start, with every property and annotation'] }, async () => {
    const all = await read(consumer, partition.partitionId, last + 1, { offset: '-1' });
    assert(all[0].sequenceNumber === 0, `first ${all[0].sequenceNumber}`);
    const ours = all.filter((e) => e.sequenceNumber >= first);
    assert(ours.length === 3, `${ours.length} events`);
    ours.forEach((e, n) => {
      assert(JSON.stringify(e.body) === JSON.stringify({ n, tag: 'mqtt' }), `body ${JSON.stringify(e.body)}`);
      assert(e.properties.n === String(n) && e.properties.tag === 'mqtt', `properties ${JSON.stringify(e.properties)}`);
      assert(e.messageId === `mqtt-${n}`, `messageId ${e.messageId}`);
      assert(e.correlationId === 'corr-mqtt', `correlationId ${e.correlationId}`);
      assert(e.contentType === 'application/json', `contentType ${e.contentType}`);
      const s = e.systemProperties;
      assert(s['iothub-connection-device-id'] === device, JSON.stringify(s));
      assert(s['iothub-message-source'] === 'Telemetry', JSON.stringify(s));
      assert(JSON.parse(s['iothub-connection-auth-method']).type === 'sas', JSON.stringify(s));
      assert(s['iothub-connection-auth-generation-id'], JSON.stringify(s));
      assert(s['iothub-enqueuedtime'] instanceof Date || typeof s['iothub-enqueuedtime'] === 'number', JSON.stringify(s));
      assert(e.sequenceNumber === first + n, `sequence ${e.sequenceNumber}`);
      assert(Number(e.offset) >= 0, `offset ${e.offset}`);
      assert(e.enqueuedTimeUtc instanceof Date && Math.abs(e.enqueuedTimeUtc - start) < 60000, `enqueued ${e.enqueuedTimeUtc}`);
    });
  });

  await check('Event Hubs endpoint: read from a sequence number (inclusive and not)', { client: CLIENT, transport: 'AMQP', scenarios: ['Event Hubs endpoint: read from a sequence number (inclusive and not)'] }, async () => {
    const inclusive = await read(consumer, partition.partitionId, 2, { sequenceNumber: first + 1, isInclusive: true });
    assert(inclusive[0].sequenceNumber === first + 1 && inclusive[1].sequenceNumber === last, `${inclusive.map((e) => e.sequenceNumber)}`);
    const exclusive = await read(consumer, partition.partitionId, 1, { sequenceNumber: first + 1 });
    assert(exclusive[0].sequenceNumber === last, `${exclusive[0].sequenceNumber}`);
  });

  await check('Event Hubs endpoint: read from an enqueued time', { client: CLIENT, transport: 'AMQP', scenarios: ['Event Hubs endpoint: read from an enqueued time'] }, async () => {
    const after = await sendTelemetry(device, Mqtt, 1, 'later');
    const events = await read(consumer, partition.partitionId, 1, { enqueuedOn: after });
    assert(events[0].body.tag === 'later', JSON.stringify(events[0].body));
  });

  await check('Event Hubs endpoint: read device telemetry (AMQP) from the start, with every property and annotation', { client: CLIENT, transport: 'AMQP', scenarios: ['Event Hubs endpoint: read device telemetry from the start, with every property and annotation'] }, async () => {
    const amqpDevice = 'eh-node-amqp-dev';
    await sendTelemetry(amqpDevice, Amqp, 2, 'amqp');
    const p = await newestPartition(consumer);
    const events = await read(consumer, p.partitionId, 2, { sequenceNumber: p.lastEnqueuedSequenceNumber - 1, isInclusive: true });
    events.forEach((e, n) => {
      assert(e.systemProperties['iothub-connection-device-id'] === amqpDevice, JSON.stringify(e.systemProperties));
      assert(e.properties.n === String(n) && e.messageId === `amqp-${n}`, JSON.stringify(e.properties));
      assert(e.contentType === 'application/json', `contentType ${e.contentType}`);
    });
  });

  await check('Event Hubs endpoint: unknown partition and consumer group are Event Hubs errors', { client: CLIENT, transport: 'AMQP', scenarios: ['Event Hubs endpoint: unknown partition and consumer group are Event Hubs errors'] }, async () => {
    let error = null;
    try {
      await consumer.getPartitionProperties('99');
    } catch (e) {
      error = e;
    }
    assert(error && /could not be found|NotFound|404/i.test(`${error.code} ${error.message}`), `partition 99: ${error}`);
    const wrongGroup = new EventHubConsumerClient('nope', eh.connection_string, { retryOptions: { maxRetries: 0 } });
    const refused = await withTimeout(new Promise((resolve) => {
      const sub = wrongGroup.subscribe('0', {
        processEvents: async () => {},
        processError: async (err) => { await sub.close(); resolve(err); },
      }, { startPosition: { offset: '-1' } });
    }), 30000, 'the refusal of an unknown consumer group');
    await closeQuietly(wrongGroup);
    assert(/could not be found/.test(refused.message), `consumer group: ${refused.message}`);
  });

  await closeQuietly(consumer);
  finish();
})();
