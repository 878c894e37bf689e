// What the hub received as telemetry, read the way a back end reads it: through the hub's
// built-in Event Hubs-compatible endpoint with the official Event Hubs SDK (@azure/event-hubs,
// EventHubConsumerClient) and the connection string hub.json announces
// (event_hubs.connection_string); NODE_EXTRA_CA_CERTS trusts the emulator's ca.pem.
//
// The whole suite shares one emulator, so reads are targeted and bounded: take `positions()`
// before sending, then `received(deviceId, count, { since })` reads every partition after
// those positions (or from the start without them), keeps only the events whose
// `iothub-connection-device-id` (and module id, if given) match, and resolves as soon as
// `count` have arrived or the deadline passes — never after a fixed sleep.
//
// Used by scenarios.js (what the device SDK sent), dps.js, and eventhubs.js (the endpoint).
'use strict';

const fs = require('fs');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const { withTimeout, closeQuietly } = require('./harness');

const hub = JSON.parse(fs.readFileSync(process.env.HUB_JSON, 'utf8'));
const eh = hub.event_hubs;

// An EventHubConsumerClient of the endpoint in the `$Default` consumer group.
function consumer(options) {
  return new EventHubConsumerClient('$Default', eh.connection_string, options);
}

// `count` events of `partitionId` from `startPosition`, by the SDK's subscribe loop.
async function read(client, partitionId, count, startPosition) {
  const events = [];
  let subscription;
  await withTimeout(new Promise((resolve, reject) => {
    subscription = client.subscribe(partitionId, {
      processEvents: async (batch) => {
        events.push(...batch);
        if (events.length >= count) resolve();
      },
      processError: async (err) => reject(err),
    }, { startPosition, maxWaitTimeInSeconds: 1 });
  }), 30000, `${count} events`);
  await subscription.close();
  return events.slice(0, count);
}

// Each partition's last sequence number now (null for an empty partition): where a read of
// what is sent next starts.
async function positions() {
  const client = consumer();
  try {
    const out = {};
    for (const id of await client.getPartitionIds()) {
      const p = await client.getPartitionProperties(id);
      out[id] = p.isEmpty ? null : p.lastEnqueuedSequenceNumber;
    }
    return out;
  } finally {
    await closeQuietly(client);
  }
}

// The events from `deviceId` (and `moduleId`, if given) in every partition after the positions
// `since` (from the start without it), once `count` have arrived or `timeoutMs` has passed
// (then fewer: the caller's assertion says what is missing; an error of the consumer's is
// thrown instead), in sequence order.
async function received(deviceId, count, { since, moduleId, timeoutMs = 20000 } = {}) {
  let startPosition = earliestEventPosition;
  if (since) {
    startPosition = {};
    for (const [id, n] of Object.entries(since)) {
      startPosition[id] = n === null ? earliestEventPosition : { sequenceNumber: n, isInclusive: false };
    }
  }
  const events = [];
  const errors = [];
  const client = consumer();
  let subscription;
  let timer;
  try {
    await new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      subscription = client.subscribe({
        processEvents: async (batch) => {
          for (const e of batch) {
            const s = e.systemProperties || {};
            if (s['iothub-connection-device-id'] !== deviceId) continue;
            if (moduleId !== undefined && s['iothub-connection-module-id'] !== moduleId) continue;
            events.push(e);
          }
          if (events.length >= count) resolve();
        },
        processError: async (err) => { errors.push(err); },
      }, { startPosition, maxWaitTimeInSeconds: 1 });
    });
  } finally {
    clearTimeout(timer);
    if (subscription) await subscription.close();
    await closeQuietly(client);
  }
  if (events.length < count && errors.length) {
    throw new Error(`${events.length} of ${count} events from ${deviceId}; the consumer failed: ${errors[0].message}`);
  }
  return events.sort((a, b) => a.sequenceNumber - b.sequenceNumber);
}

// An event's body as text: the SDK hands a JSON body over parsed, any other as a Buffer.
function bodyText(event) {
  if (Buffer.isBuffer(event.body)) return event.body.toString('utf8');
  return typeof event.body === 'string' ? event.body : JSON.stringify(event.body);
}

// What a check compares, from an event as the SDK surfaces it: body text, application
// properties, the message properties (messageId, correlationId, contentType, contentEncoding)
// and the sender IoT Hub stamps (deviceId, moduleId).
function summary(event) {
  const s = event.systemProperties || {};
  return {
    body: bodyText(event),
    properties: event.properties || {},
    messageId: event.messageId,
    correlationId: event.correlationId,
    contentType: event.contentType,
    contentEncoding: s.contentEncoding,
    deviceId: s['iothub-connection-device-id'],
    moduleId: s['iothub-connection-module-id'],
  };
}

module.exports = { eh, consumer, read, positions, received, bodyText, summary };
