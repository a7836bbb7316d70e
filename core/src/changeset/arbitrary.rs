//! Proptest strategies for values, primary keys, paths, properties and instructions, shared by
//! the property tests of the codecs (test builds only).

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

use crate::changeset::{Instruction, Path, PathElement};
use crate::schema::{CollectionKind, Container, PrimaryKeyType, Property, ScalarType};
use crate::value::{Decimal, Link, ObjectId, PrimaryKey, Uuid, Value};

/// Collection, field and key names: mostly from a small pool (so interning has work to do),
/// sometimes arbitrary Unicode.
pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["Task", "User", "_id", "name", "tags", "a", "b", "é"])
            .prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

/// Any primary key.
pub fn primary_key() -> impl Strategy<Value = PrimaryKey> {
    prop_oneof![
        any::<i64>().prop_map(PrimaryKey::Int),
        "\\PC{0,16}".prop_map(PrimaryKey::String),
        any::<[u8; 12]>().prop_map(|b| PrimaryKey::ObjectId(ObjectId(b))),
        any::<[u8; 16]>().prop_map(|b| PrimaryKey::Uuid(Uuid(b))),
    ]
}

/// Valid decimal texts, including the special values.
pub fn decimal() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        "[-+]?[0-9]{1,8}(\\.[0-9]{0,6})?([eE][-+]?[0-9]{1,4})?",
        "[-+]?\\.[0-9]{1,6}",
        prop::sample::select(vec!["NaN", "Infinity", "-Infinity"]).prop_map(str::to_owned),
    ]
    .prop_filter_map("valid decimal", |s| Decimal::parse(&s).ok())
}

/// Any scalar (non-container) value, doubles with arbitrary bit patterns included.
pub fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Double),
        prop::sample::select(vec![
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            1.5
        ])
        .prop_map(Value::Double),
        "\\PC{0,16}".prop_map(Value::String),
        vec(any::<u8>(), 0..24).prop_map(Value::Binary),
        any::<i64>().prop_map(Value::Date),
        any::<[u8; 12]>().prop_map(|b| Value::ObjectId(ObjectId(b))),
        any::<[u8; 16]>().prop_map(|b| Value::Uuid(Uuid(b))),
        decimal().prop_map(Value::Decimal),
        (name(), primary_key()).prop_map(|(collection, key)| Value::Link(Link { collection, key })),
    ]
}

/// Any value: scalars and containers nested up to four levels.
pub fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|items| Value::List(items.into())),
            vec(inner.clone(), 0..6).prop_map(Value::set_from),
            btree_map(name(), inner.clone(), 0..6).prop_map(Value::Dict),
            btree_map(name(), inner, 0..6).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Any path, with up to four nested elements.
pub fn path() -> impl Strategy<Value = Path> {
    let element = prop_oneof![
        name().prop_map(PathElement::Field),
        any::<u32>().prop_map(PathElement::Index),
        name().prop_map(PathElement::Key),
    ];
    (name(), primary_key(), name(), vec(element, 0..4)).prop_map(
        |(collection, key, field, nested)| Path {
            collection,
            key,
            field,
            nested,
        },
    )
}

/// Any primary-key type.
pub fn primary_key_type() -> impl Strategy<Value = PrimaryKeyType> {
    prop::sample::select(vec![
        PrimaryKeyType::Int,
        PrimaryKeyType::String,
        PrimaryKeyType::ObjectId,
        PrimaryKeyType::Uuid,
    ])
}

/// Any scalar type, links and embedded objects included.
pub fn scalar_type() -> impl Strategy<Value = ScalarType> {
    prop_oneof![
        prop::sample::select(vec![
            ScalarType::Bool,
            ScalarType::Int,
            ScalarType::Double,
            ScalarType::String,
            ScalarType::Binary,
            ScalarType::Date,
            ScalarType::ObjectId,
            ScalarType::Uuid,
            ScalarType::Decimal,
            ScalarType::Mixed,
            ScalarType::Counter,
        ]),
        name().prop_map(ScalarType::Link),
        name().prop_map(ScalarType::Embedded),
    ]
}

/// Any container.
pub fn container() -> impl Strategy<Value = Container> {
    prop::sample::select(vec![
        Container::Single,
        Container::List,
        Container::Set,
        Container::Dictionary,
    ])
}

/// Any property (not necessarily one a schema would accept).
pub fn property() -> impl Strategy<Value = Property> {
    (
        name(),
        scalar_type(),
        container(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, ty, container, optional, indexed)| Property {
            name,
            ty,
            container,
            optional,
            indexed,
        })
}

/// Any instruction.
pub fn instruction() -> impl Strategy<Value = Instruction> {
    let kind = prop::sample::select(vec![
        CollectionKind::TopLevel,
        CollectionKind::Embedded,
        CollectionKind::Asymmetric,
    ]);
    prop_oneof![
        (name(), kind, prop::option::of(primary_key_type())).prop_map(
            |(name, kind, primary_key)| Instruction::AddCollection {
                name,
                kind,
                primary_key
            }
        ),
        (name(), property()).prop_map(|(collection, property)| Instruction::AddProperty {
            collection,
            property
        }),
        (name(), primary_key())
            .prop_map(|(collection, key)| Instruction::CreateObject { collection, key }),
        (name(), primary_key())
            .prop_map(|(collection, key)| Instruction::EraseObject { collection, key }),
        (path(), value()).prop_map(|(path, value)| Instruction::Set { path, value }),
        (path(), any::<i64>()).prop_map(|(path, delta)| Instruction::AddInteger { path, delta }),
        (path(), any::<u32>(), value(), any::<u32>()).prop_map(
            |(list, index, value, prior_size)| Instruction::ListInsert {
                list,
                index,
                value,
                prior_size
            }
        ),
        (path(), any::<u32>(), value(), any::<u32>()).prop_map(
            |(list, index, value, prior_size)| Instruction::ListSet {
                list,
                index,
                value,
                prior_size
            }
        ),
        (path(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(list, from, to, prior_size)| Instruction::ListMove {
                list,
                from,
                to,
                prior_size
            }
        ),
        (path(), any::<u32>(), any::<u32>()).prop_map(|(list, index, prior_size)| {
            Instruction::ListErase {
                list,
                index,
                prior_size,
            }
        }),
        path().prop_map(|path| Instruction::Clear { path }),
        (path(), value()).prop_map(|(set, value)| Instruction::SetInsert { set, value }),
        (path(), value()).prop_map(|(set, value)| Instruction::SetErase { set, value }),
        (path(), name()).prop_map(|(dict, key)| Instruction::DictErase { dict, key }),
    ]
}
