// The official Node SDKs' file upload against the emulator in storage-account mode (Azurite as
// the blob service, ADR 25), run by ../python/file_upload_azurite.py:
//
//   node upload_azurite.js DEVICE_CONNECTION_STRING SERVICE_CONNECTION_STRING BLOB_NAME BYTES
//
// The device uploads BYTES bytes with uploadToBlob over HTTPS (azure-iot-device-http: the hub's
// SAS, @azure/storage-blob's staged upload to https://{hostName}/{container}/{blob}{sas}, the
// notification); the service's file notification receiver (azure-iothub, AMQP) reads and
// completes the notification, which is printed as one JSON line. Exit status 0 on success.
'use strict';

const { Readable } = require('stream');
const { Client } = require('azure-iot-device');
const { Http } = require('azure-iot-device-http');
const { Client: ServiceClient } = require('azure-iothub');

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main() {
  const [deviceCs, serviceCs, blobName, bytes] = process.argv.slice(2);
  const deviceId = /DeviceId=([^;]+)/.exec(deviceCs)[1];
  const service = ServiceClient.fromConnectionString(serviceCs);
  const device = Client.fromConnectionString(deviceCs, Http);
  try {
    await withTimeout(service.open(), 15000, 'the service client to open');
    const notification = new Promise((resolve, reject) => {
      service.getFileNotificationReceiver((err, receiver) => {
        if (err) return reject(err);
        receiver.on('message', (msg) => {
          const n = JSON.parse(msg.getData().toString());
          if (n.deviceId === deviceId) receiver.complete(msg, () => resolve(n));
        });
      });
    });
    const size = Number(bytes);
    const content = Buffer.alloc(size, 'node→azurite ');
    await withTimeout(device.uploadToBlob(blobName, Readable.from([content]), size), 60000, 'uploadToBlob');
    const n = await withTimeout(notification, 20000, 'the file notification');
    console.log(JSON.stringify(n));
  } finally {
    await service.close().catch(() => {});
    await device.close().catch(() => {});
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
