//! A deterministic 64-bit digest (FNV-1a over a canonical walk) of a store's schema and objects,
//! the same on every platform, so simulations can compare replicas cheaply.

use std::collections::BTreeMap;

use crate::schema::{CollectionKind, Container, PrimaryKeyType, ScalarType, Schema};
use crate::value::{Document, PrimaryKey, Value};

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// An FNV-1a hasher with length-prefixed, fixed-width encodings of everything it is fed.
#[derive(Debug)]
struct Fnv(u64);

impl Fnv {
    fn byte(&mut self, byte: u8) {
        self.0 ^= u64::from(byte);
        self.0 = self.0.wrapping_mul(PRIME);
    }

    fn raw(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|b| self.byte(*b));
    }

    fn u64(&mut self, value: u64) {
        self.raw(&value.to_le_bytes());
    }

    fn len(&mut self, len: usize) {
        self.u64(u64::try_from(len).unwrap_or(u64::MAX));
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.len(bytes.len());
        self.raw(bytes);
    }

    fn str(&mut self, text: &str) {
        self.bytes(text.as_bytes());
    }

    fn key(&mut self, key: &PrimaryKey) {
        match key {
            PrimaryKey::Int(i) => {
                self.byte(0);
                self.raw(&i.to_le_bytes());
            }
            PrimaryKey::String(s) => {
                self.byte(1);
                self.str(s);
            }
            PrimaryKey::ObjectId(o) => {
                self.byte(2);
                self.raw(&o.0);
            }
            PrimaryKey::Uuid(u) => {
                self.byte(3);
                self.raw(&u.0);
            }
        }
    }

    fn map<'a>(&mut self, map: &mut dyn ExactSizeIterator<Item = (&'a String, &'a Value)>) {
        self.len(map.len());
        for (name, value) in map {
            self.str(name);
            self.value(value);
        }
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.byte(0),
            Value::Bool(b) => {
                self.byte(1);
                self.byte(u8::from(*b));
            }
            Value::Int(i) => {
                self.byte(2);
                self.raw(&i.to_le_bytes());
            }
            Value::Double(d) => {
                self.byte(3);
                self.u64(d.to_bits());
            }
            Value::String(s) => {
                self.byte(4);
                self.str(s);
            }
            Value::Binary(b) => {
                self.byte(5);
                self.bytes(b);
            }
            Value::Date(ms) => {
                self.byte(6);
                self.raw(&ms.to_le_bytes());
            }
            Value::ObjectId(o) => {
                self.byte(7);
                self.raw(&o.0);
            }
            Value::Uuid(u) => {
                self.byte(8);
                self.raw(&u.0);
            }
            Value::Decimal(d) => {
                self.byte(9);
                self.str(d.as_str());
            }
            Value::Link(link) => {
                self.byte(10);
                self.str(&link.collection);
                self.key(&link.key);
            }
            Value::List(items) | Value::Set(items) => {
                self.byte(if matches!(value, Value::List(_)) {
                    11
                } else {
                    12
                });
                self.len(items.len());
                items.iter().for_each(|item| self.value(item));
            }
            Value::Dict(map) => {
                self.byte(13);
                self.map(&mut map.iter());
            }
            Value::Object(map) => {
                self.byte(14);
                self.map(&mut map.iter());
            }
        }
    }

    fn scalar_type(&mut self, ty: &ScalarType) {
        let (tag, target) = ty.code();
        self.byte(tag);
        if let Some(target) = target {
            self.str(target);
        }
    }

    fn schema(&mut self, schema: &Schema) {
        self.len(schema.collections.len());
        for (name, coll) in &schema.collections {
            self.str(name);
            self.byte(match coll.kind {
                CollectionKind::TopLevel => 0,
                CollectionKind::Embedded => 1,
                CollectionKind::Asymmetric => 2,
            });
            self.byte(match coll.primary_key {
                None => 0,
                Some(PrimaryKeyType::Int) => 1,
                Some(PrimaryKeyType::String) => 2,
                Some(PrimaryKeyType::ObjectId) => 3,
                Some(PrimaryKeyType::Uuid) => 4,
            });
            self.len(coll.properties.len());
            for (prop_name, prop) in &coll.properties {
                self.str(prop_name);
                self.str(&prop.name);
                self.scalar_type(&prop.ty);
                self.byte(match prop.container {
                    Container::Single => 0,
                    Container::List => 1,
                    Container::Set => 2,
                    Container::Dictionary => 3,
                });
                self.byte(u8::from(prop.optional));
                self.byte(u8::from(prop.indexed));
            }
        }
    }
}

/// The digest of a schema and the objects of every collection (empty collections skipped).
pub(crate) fn digest(
    schema: &Schema,
    objects: &BTreeMap<String, BTreeMap<PrimaryKey, Document>>,
) -> u64 {
    let mut fnv = Fnv(OFFSET);
    fnv.schema(schema);
    for (name, docs) in objects.iter().filter(|(_, docs)| !docs.is_empty()) {
        fnv.str(name);
        fnv.len(docs.len());
        for (key, doc) in docs {
            fnv.key(key);
            fnv.map(&mut doc.iter());
        }
    }
    fnv.0
}
