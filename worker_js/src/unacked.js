// Results sent but not yet acknowledged, kept as the native worker keeps them
// (server/tabgrid/worker/unacked.py): in the order sent, sent again after a reconnect, first
// thing after the welcome, and forgotten once an `ack` names them. Bounded by count and by
// bytes; when full, the oldest go first.

// As many results as one result message may carry by default (twice the coordinator's
// max_leases), and a bound on their bytes.
export const MAX_RESULTS = 128;
export const MAX_BYTES = 32 * 1024 * 1024;
const ENVELOPE = 64; // the message's own JSON around its items
const utf8 = new TextEncoder();

const bytesOf = (item) => utf8.encode(JSON.stringify(item)).length;

export class Unacked {
  constructor(maxResults = MAX_RESULTS, maxBytes = MAX_BYTES) {
    if (!(maxResults >= 1 && maxBytes >= 1)) {
      throw new RangeError(`bounds must be positive, got ${maxResults} and ${maxBytes}`);
    }
    this.maxResults = maxResults;
    this.maxBytes = maxBytes;
    this.kept = new Map(); // lease -> {item, size}, oldest first
    this.bytes = 0;
  }

  get size() {
    return this.kept.size;
  }

  items() {
    return Array.from(this.kept.values(), (k) => k.item);
  }

  // Keeps the items (a lease sent again replaces its older copy); returns the leases dropped
  // to stay within the bounds, oldest first.
  add(items) {
    for (const item of items) {
      this.pop(item.lease);
      const size = bytesOf(item);
      this.kept.set(item.lease, { item, size });
      this.bytes += size;
    }
    const dropped = [];
    while (this.kept.size && (this.kept.size > this.maxResults || this.bytes > this.maxBytes)) {
      const [lease] = this.kept.keys();
      this.pop(lease);
      dropped.push(lease);
    }
    return dropped;
  }

  // Drops these leases (acknowledged, or cancelled); returns how many were kept.
  forget(leases) {
    let n = 0;
    for (const lease of leases) n += this.pop(lease) ? 1 : 0;
    return n;
  }

  clear() {
    this.kept.clear();
    this.bytes = 0;
  }

  pop(lease) {
    const kept = this.kept.get(lease);
    if (!kept) return false;
    this.kept.delete(lease);
    this.bytes -= kept.size;
    return true;
  }
}

// The results one message may carry to the coordinator that sent this welcome.
export const maxResults = (welcome) => welcome.max_results || MAX_RESULTS;

// The items as result messages of at most maxMessage bytes and maxItems items each, in order;
// tooBig: the leases of items that fit in no message.
export function inMessages(items, maxMessage, maxItems = MAX_RESULTS) {
  const messages = [];
  const tooBig = [];
  let batch = [];
  let size = ENVELOPE;
  for (const item of items) {
    const n = bytesOf(item) + 1; // and its comma
    if (n + ENVELOPE > maxMessage) {
      tooBig.push(item.lease);
      continue;
    }
    if (batch.length && (size + n > maxMessage || batch.length >= maxItems)) {
      messages.push(batch);
      batch = [];
      size = ENVELOPE;
    }
    batch.push(item);
    size += n;
  }
  if (batch.length) messages.push(batch);
  return { messages, tooBig };
}
