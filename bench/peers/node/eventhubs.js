// The official Event Hubs SDK for JavaScript (@azure/event-hubs, EventHubConsumerClient) reads
// every event of the emulator's Event Hubs-compatible endpoint from the start of every partition
// (../../eventhubs.sh). Usage: NODE_EXTRA_CA_CERTS=HUB_DIR/ca.pem node eventhubs.js HUB_DIR
//
// One subscription over all partitions (no checkpoint store: the client owns every partition),
// maxBatchSize 300, prefetch (the SDK's default: credit equal to the batch size). The number of
// events to expect is the sum of the partitions' properties, taken before reading. Prints one
// RESULT line: events/s from subscribe to the last event, and the time to the first event.
'use strict';

const fs = require('fs');
const path = require('path');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');

(async () => {
  const hubDir = process.argv[2];
  const hub = JSON.parse(fs.readFileSync(path.join(hubDir, 'hub.json'), 'utf8'));
  const client = new EventHubConsumerClient('$Default', hub.event_hubs.connection_string);
  let expected = 0;
  for (const id of await client.getPartitionIds()) {
    const p = await client.getPartitionProperties(id);
    if (!p.isEmpty) expected += p.lastEnqueuedSequenceNumber - p.beginningSequenceNumber + 1;
  }
  let received = 0;
  let prop1 = 0;
  let first = null;
  const started = process.hrtime.bigint();
  let subscription;
  await new Promise((resolve, reject) => {
    subscription = client.subscribe({
      processEvents: async (events) => {
        if (first === null && events.length) first = process.hrtime.bigint();
        received += events.length;
        for (const e of events) if (e.properties && e.properties.prop1 !== undefined) prop1 += 1;
        if (received >= expected) resolve();
      },
      processError: async (err) => reject(err),
    }, { startPosition: earliestEventPosition, maxBatchSize: 300, maxWaitTimeInSeconds: 1 });
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await subscription.close();
  await client.close();
  console.log('RESULT ' + JSON.stringify({
    mode: 'eventhubs', client: 'node @azure/event-hubs', events: received, with_prop1: prop1,
    seconds, events_per_sec: received / seconds, first_event_ms: Number(first - started) / 1e6,
  }));
})().catch((e) => { console.error(e); process.exit(1); });
