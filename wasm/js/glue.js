// Small JavaScript helpers the eddy-sync bindings import: real Error subclasses, and the
// managed-object proxy (a plain snapshot object whose assignments are recorded as writes).

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

const META = Symbol("eddy.object");

export function errorClass(kind, message, code, action, extra) {
  switch (kind) {
    case "sync": return new SyncError(message, code, action);
    case "compensating": return new CompensatingWriteError(message, code, action, extra);
    case "storage": return new StorageError(message, code, action);
    case "auth": return new AuthError(message, code, action);
    default: return new EddyError(message, code, action);
  }
}

export function managedObject(db, collection, key, fields) {
  Object.defineProperty(fields, META, { value: { collection, key } });
  Object.defineProperty(fields, "addListener", {
    value(callback) { db._addObjectListener(collection, key, callback); },
  });
  Object.defineProperty(fields, "removeListener", {
    value(callback) { db._removeObjectListener(callback); },
  });
  return new Proxy(fields, {
    set(target, prop, value) {
      if (typeof prop !== "string") return false;
      db._setProperty(collection, key, prop, value);
      target[prop] = value;
      return true;
    },
  });
}

export function objectRef(obj) {
  return obj !== null && typeof obj === "object" ? obj[META] : undefined;
}
