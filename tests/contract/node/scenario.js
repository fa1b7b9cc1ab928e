// The official Node client on its default gRPC transport, against the runner.
// Usage: node scenario.js HOST:PORT TARGET_URL   (prints one JSON document of what it saw)
'use strict';
const {CloudTasksClient} = require('@google-cloud/tasks');
const {grpc} = require('google-gax');

async function codeOf(promise) {
  try {
    await promise;
    return 0;
  } catch (error) {
    return error.code;
  }
}

async function main() {
  const [address, target] = process.argv.slice(2);
  const colon = address.lastIndexOf(':');
  const [host, port] = [address.slice(0, colon), Number(address.slice(colon + 1))];
  // An insecure channel to the runner: no TLS, no credentials.
  const client = new CloudTasksClient({apiEndpoint: host, port, sslCreds: grpc.credentials.createInsecure()});
  const parent = 'projects/node-project/locations/us-central1';
  const name = `${parent}/queues/node-${Date.now()}`;
  const out = {};

  const [queue] = await client.createQueue({parent, queue: {name}});
  out.queueState = queue.state;
  out.duplicateQueue = await codeOf(client.createQueue({parent, queue: {name}}));
  out.missingQueue = await codeOf(client.getQueue({name: `${parent}/queues/never-created`}));

  const [delivered] = await client.createTask({
    parent: name,
    task: {name: `${name}/tasks/deliver`, httpRequest: {url: target, httpMethod: 'POST', body: Buffer.from('{"from": "node"}')}},
  });
  out.deliveredName = delivered.name;
  const again = {parent: name, task: {name: `${name}/tasks/deliver`, httpRequest: {url: target}}};
  out.duplicateTask = await codeOf(client.createTask(again));
  const nowhere = {parent: `${parent}/queues/never-created`, task: {httpRequest: {url: target}}};
  out.missingQueueTask = await codeOf(client.createTask(nowhere));

  const paged = `${name}-paged`;
  await client.createQueue({parent, queue: {name: paged}});
  await client.pauseQueue({name: paged});
  for (let i = 0; i < 5; i++) {
    await client.createTask({parent: paged, task: {name: `${paged}/tasks/page-${i}`, httpRequest: {url: target}}});
  }
  const pages = [];
  let pageToken = '';
  do {
    const request = {parent: paged, pageSize: 2, pageToken};
    const [tasks, , response] = await client.listTasks(request, {autoPaginate: false});
    pages.push(tasks.map(t => t.name.split('/').pop()));
    pageToken = response.nextPageToken;
  } while (pageToken);
  out.pages = pages;

  const [ran] = await client.runTask({name: `${paged}/tasks/page-0`});
  out.ranDispatchCount = ran.dispatchCount;
  await client.close();
  console.log(JSON.stringify(out));
}

main().catch(error => {
  console.error(error);
  process.exit(1);
});
