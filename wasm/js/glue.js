// Small JavaScript helpers the eddy-sync bindings import: real Error subclasses, and the live
// object proxy (a field read asks the wasm handle for the current value, unless the proxy holds
// it from a read since the store last changed; assignments inside write() are applied to the
// transaction).

export class EddyError extends Error {
  constructor(message, code, action) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.action = action;
  }
}

export class SyncError extends EddyError {}

export class CompensatingWriteError extends SyncError {
  constructor(message, code, action, writes) {
    super(message, code, action);
    this.writes = writes;
  }
}

export class StorageError extends EddyError {}

export class AuthError extends EddyError {}

export function errorClass(kind, message, code, action, extra) {
  switch (kind) {
    case "sync": return new SyncError(message, code, action);
    case "compensating": return new CompensatingWriteError(message, code, action, extra);
    case "storage": return new StorageError(message, code, action);
    case "auth": return new AuthError(message, code, action);
    default: return new EddyError(message, code, action);
  }
}

const META = Symbol("eddy.object");
const HANDLE = Symbol("eddy.handle");
const CACHE = Symbol("eddy.cache");

// Counts the times the bindings said a store may have changed. A proxy keeps the primitive
// values it read (arrays, dates and objects are fresh copies on every read) only while this
// count stays the same.
let epoch = 0;

export function storeChanged() {
  epoch++;
}

function read(target, prop) {
  let cache = target[CACHE];
  if (cache === undefined || cache.epoch !== epoch) {
    cache = target[CACHE] = { epoch, values: new Map() };
  }
  let value = cache.values.get(prop);
  if (value !== undefined) return value;
  value = target[HANDLE].get(prop);
  if (value !== undefined && (value === null || typeof value !== "object")) {
    cache.values.set(prop, value);
  }
  return value;
}

// The prototype of every object's proxy target: the methods a live object has besides its fields
// (a class, so that for...in does not list them; a schema property with one of their names can
// be read only through toJSON()).
class Live {
  isValid() { return this[HANDLE].isValid(); }
  toJSON() { return this[HANDLE].toJSON(); }
  addListener(callback) { this[HANDLE].addListener(this, callback); }
  removeListener(callback) { this[HANDLE].removeListener(callback); }
}
const LIVE = Live.prototype;

const FIELDS = {
  get(target, prop, receiver) {
    if (typeof prop === "string" && !(prop in target)) return read(target, prop);
    return Reflect.get(target, prop, receiver);
  },
  set(target, prop, value) {
    if (typeof prop !== "string" || prop in LIVE) return false;
    target[HANDLE].set(prop, value);
    return true;
  },
  has(target, prop) {
    return (typeof prop === "string" && target[HANDLE].has(prop)) || prop in target;
  },
  ownKeys(target) {
    return target[HANDLE].keys();
  },
  getOwnPropertyDescriptor(target, prop) {
    if (typeof prop !== "string" || !target[HANDLE].has(prop)) {
      return Reflect.getOwnPropertyDescriptor(target, prop);
    }
    const value = read(target, prop);
    if (value === undefined) return undefined;
    return { value, writable: true, enumerable: true, configurable: true };
  },
};

export function liveObject(handle, collection, key) {
  const target = Object.create(LIVE);
  target[HANDLE] = handle;
  target[META] = { collection, key };
  return new Proxy(target, FIELDS);
}

export function objectRef(obj) {
  return obj !== null && typeof obj === "object" ? obj[META] : undefined;
}
