// The strip of big numbers at the top: the network right now.

import { $, setText } from './dom.js';
import * as fmt from './format.js';

function show(id, text, value) {
  const node = $(id);
  setText(node, text);
  node.dataset.value = value ?? '';
}

export function renderNetwork(net) {
  if (!net) return;
  // A figure the coordinator leaves out (e.g. no paused jobs) counts as zero.
  const workers = { connected: 0, browser: 0, native: 0, banned: 0, draining: 0, ...net.workers };
  const jobs = { running: 0, paused: 0, ...net.jobs };
  show('net-workers', fmt.count(workers.connected), workers.connected);
  show('net-browser', fmt.count(workers.browser), workers.browser);
  show('net-native', fmt.count(workers.native), workers.native);
  show('net-banned', fmt.count(workers.banned), workers.banned);
  show('net-draining', fmt.count(workers.draining), workers.draining);
  show('net-validated', fmt.rate(net.validated_per_s), net.validated_per_s);
  const results = net.results_per_s ?? {};
  show('net-valid', fmt.rate(results.valid), results.valid);
  show('net-invalid', fmt.rate(results.invalid), results.invalid);
  show('net-error', fmt.rate(results.error), results.error);
  // Colour only when something is wrong, so a glance finds trouble.
  $('net-invalid').classList.toggle('warn', results.invalid > 0);
  $('net-error').classList.toggle('bad', results.error > 0);
  show('net-leases', fmt.count(net.leases), net.leases);
  show('net-queue', fmt.count(net.queue), net.queue);
  show('net-jobs', fmt.count(jobs.running), jobs.running);
  show('net-paused', fmt.count(jobs.paused), jobs.paused);
  // Addresses holding many worker ids: a saboteur that comes back under new ids shows here.
  const shared = net.shared_addresses ?? [];
  const top = shared
    .slice(0, 3)
    .map((a) => `${a.addr} (${a.ids} ids${a.banned ? `, ${a.banned} banned` : ''})`);
  setText($('net-shared'), shared.length ? `many ids at ${top.join(', ')}` : '');
  $('net-shared').classList.toggle('warn', shared.some((a) => a.banned > 0));
}
