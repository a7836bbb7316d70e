//! Tests of parsing, display, validation, evaluation and binding of RQL queries, on a small
//! in-memory object source, plus property tests for parser robustness, display round-trips and
//! agreement with a reference evaluator.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::ast::{
    Arg, Clause, CompareOp, Comparison, KeyPath, Offset, Operand, Predicate, Quantifier, Step, Tail,
};
use super::*;
use crate::schema::{
    CollectionKind, CollectionSchema, Container, PrimaryKeyType, Property, ScalarType,
};
use crate::value::{Decimal, Link, ObjectId, Uuid};

const OID: &str = "5f1b2c3d4e5f6a7b8c9d0e1f";
const UUID: &str = "123e4567-e89b-12d3-a456-426614174000";

/// A minimal object source: collections of documents by primary key.
#[derive(Default)]
struct Store {
    schema: Schema,
    objects: BTreeMap<String, BTreeMap<PrimaryKey, Document>>,
}

impl ObjectSource for Store {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn get(&self, collection: &str, key: &PrimaryKey) -> Option<&Document> {
        self.objects.get(collection)?.get(key)
    }

    fn objects<'a>(
        &'a self,
        collection: &str,
    ) -> Box<dyn Iterator<Item = (&'a PrimaryKey, &'a Document)> + 'a> {
        match self.objects.get(collection) {
            Some(objects) => Box::new(objects.iter()),
            None => Box::new(std::iter::empty()),
        }
    }
}

fn prop(name: &str, ty: ScalarType, container: Container) -> Property {
    Property {
        container,
        optional: true,
        ..Property::new(name, ty)
    }
}

fn schema() -> Schema {
    use Container::{Dictionary, List, Single};
    let person = CollectionSchema::top_level("Person", PrimaryKeyType::Int)
        .with(prop("name", ScalarType::String, Single))
        .with(prop("nick", ScalarType::String, Single))
        .with(prop("age", ScalarType::Int, Single))
        .with(prop("score", ScalarType::Double, Single))
        .with(prop("price", ScalarType::Decimal, Single))
        .with(prop("flag", ScalarType::Bool, Single))
        .with(prop("born", ScalarType::Date, Single))
        .with(prop("avatar", ScalarType::Binary, Single))
        .with(prop("oid", ScalarType::ObjectId, Single))
        .with(prop("uuid", ScalarType::Uuid, Single))
        .with(prop("mixed", ScalarType::Mixed, Single))
        .with(prop("tags", ScalarType::String, List))
        .with(prop("scores", ScalarType::Int, List))
        .with(prop("prices", ScalarType::Double, Dictionary))
        .with(prop("owner", ScalarType::Link("Person".into()), Single))
        .with(prop("friends", ScalarType::Link("Person".into()), List))
        .with(prop(
            "address",
            ScalarType::Embedded("Address".into()),
            Single,
        ));
    let address = CollectionSchema {
        name: "Address".into(),
        kind: CollectionKind::Embedded,
        primary_key: None,
        properties: crate::schema::NameMap::new(),
    }
    .with(prop("city", ScalarType::String, Single))
    .with(prop("zip", ScalarType::Int, Single));
    let mut schema = Schema::default();
    schema.insert(person);
    schema.insert(address);
    schema
}

fn link(key: i64) -> Value {
    Value::Link(Link {
        collection: "Person".into(),
        key: PrimaryKey::Int(key),
    })
}

fn strings(items: &[&str]) -> Value {
    Value::List(items.iter().map(|s| Value::from(*s)).collect())
}

fn ints(items: &[i64]) -> Value {
    Value::List(items.iter().map(|i| Value::Int(*i)).collect())
}

fn object(fields: Vec<(&str, Value)>) -> Document {
    fields
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

fn store() -> Store {
    let people = vec![
        object(vec![
            ("name", "Alice".into()),
            ("nick", Value::Null),
            ("age", Value::Int(30)),
            ("score", Value::Double(1.5)),
            ("price", Value::Decimal(Decimal::parse("9.50").unwrap())),
            ("flag", Value::Bool(true)),
            ("born", Value::Date(1_000)),
            ("avatar", Value::Binary(vec![1, 2, 3])),
            ("oid", Value::ObjectId(ObjectId::parse(OID).unwrap())),
            ("tags", strings(&["red", "blue"])),
            ("scores", ints(&[1, 2, 3])),
            (
                "prices",
                Value::Dict(
                    object(vec![
                        ("eur", Value::Double(10.0)),
                        ("usd", Value::Double(12.0)),
                    ])
                    .into_iter()
                    .collect(),
                ),
            ),
            ("owner", link(2)),
            ("friends", Value::List(vec![link(2), link(3)].into())),
            (
                "address",
                Value::Object(object(vec![
                    ("city", "Oslo".into()),
                    ("zip", Value::Int(150)),
                ])),
            ),
        ]),
        object(vec![
            ("name", "bob".into()),
            ("age", Value::Int(25)),
            ("score", Value::Double(2.0)),
            ("flag", Value::Bool(false)),
            ("born", Value::Date(2_000)),
            ("uuid", Value::Uuid(Uuid::parse(UUID).unwrap())),
            ("tags", strings(&["green"])),
            ("scores", ints(&[])),
            (
                "prices",
                Value::Dict(
                    object(vec![("eur", Value::Double(5.0))])
                        .into_iter()
                        .collect(),
                ),
            ),
            ("owner", link(99)),
            ("friends", Value::List(vec![link(1)].into())),
            (
                "address",
                Value::Object(object(vec![
                    ("city", "Bergen".into()),
                    ("zip", Value::Int(5003)),
                ])),
            ),
        ]),
        object(vec![
            ("name", "Carol".into()),
            ("age", Value::Int(35)),
            ("tags", strings(&[])),
            ("scores", ints(&[10])),
            ("owner", link(1)),
            ("friends", Value::List(vec![].into())),
        ]),
        object(vec![
            ("name", "dave".into()),
            ("tags", strings(&["red"])),
            ("scores", ints(&[5, 5])),
            ("friends", Value::List(vec![].into())),
        ]),
    ];
    let mut store = Store {
        schema: schema(),
        ..Store::default()
    };
    let collection = store.objects.entry("Person".into()).or_default();
    for (i, mut doc) in people.into_iter().enumerate() {
        let key = i as i64 + 1;
        doc.insert("_id".into(), Value::Int(key));
        collection.insert(PrimaryKey::Int(key), doc);
    }
    store
}

fn keys(store: &Store, text: &str, args: &[Value]) -> Vec<i64> {
    let query = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    query
        .validate(&store.schema, "Person")
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    query
        .run(store, "Person", args)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .into_iter()
        .map(|key| match key {
            PrimaryKey::Int(i) => i,
            other => panic!("unexpected key {other:?}"),
        })
        .collect()
}

#[test]
fn every_operator_evaluates_like_realm() {
    let store = store();
    let cases: &[(&str, &[i64])] = &[
        ("age == 30", &[1]),
        ("age = 30", &[1]),
        ("age != 30", &[2, 3, 4]),
        ("age < 30", &[2]),
        ("age <= 30", &[1, 2]),
        ("age > 30", &[3]),
        ("age >= 30", &[1, 3]),
        ("30 < age", &[3]),
        ("age == 30.0", &[1]),
        ("age == null", &[4]),
        ("age == NIL", &[4]),
        ("age != null", &[1, 2, 3]),
        ("score > 1", &[1, 2]),
        ("score == 2", &[2]),
        ("price == 9.5", &[1]),
        ("price == decimal128(9.50)", &[1]),
        ("price > 9", &[1]),
        ("name == 'Alice'", &[1]),
        ("name == \"Alice\"", &[1]),
        ("name ==[c] 'ALICE'", &[1]),
        ("name !=[c] 'alice'", &[2, 3, 4]),
        ("name < 'B'", &[1]),
        ("name BEGINSWITH 'A'", &[1]),
        ("name BEGINSWITH[c] 'c'", &[3]),
        ("name beginswith 'c'", &[]),
        ("name ENDSWITH 'e'", &[1, 4]),
        ("name ENDSWITH[c] 'OL'", &[3]),
        ("name CONTAINS 'o'", &[2, 3]),
        ("name CONTAINS[c] 'A'", &[1, 3, 4]),
        ("name LIKE '?o*'", &[2]),
        ("name LIKE[c] 'a*E'", &[1]),
        ("name LIKE 'a*E'", &[]),
        ("tags == 'red'", &[1, 4]),
        ("ANY tags == 'red'", &[1, 4]),
        ("SOME tags == 'red'", &[1, 4]),
        ("ALL tags == 'red'", &[3, 4]),
        ("NONE tags == 'red'", &[2, 3]),
        ("tags BEGINSWITH 'gr'", &[2]),
        ("scores > 4", &[3, 4]),
        ("ALL scores > 4", &[2, 3, 4]),
        ("tags.@count == 2", &[1]),
        ("tags.@size > 0", &[1, 2, 4]),
        ("name.@size == 3", &[2]),
        ("scores.@sum == 10", &[3, 4]),
        ("scores.@sum == 0", &[2]),
        ("scores.@avg == 2", &[1]),
        ("scores.@avg == null", &[2]),
        ("scores.@min == 1", &[1]),
        ("scores.@max >= 10", &[3]),
        ("friends.age.@max == 35", &[1]),
        ("address.city == 'Oslo'", &[1]),
        ("address.zip > 1000", &[2]),
        ("address.city == null", &[3, 4]),
        ("owner.name == 'bob'", &[1]),
        ("owner.name == null", &[2, 4]),
        ("owner.owner.name == 'bob'", &[3]),
        ("owner._id == 2", &[1]),
        ("friends.name == 'Carol'", &[1]),
        ("ALL friends.age > 26", &[2, 3, 4]),
        ("NONE friends.name BEGINSWITH 'A'", &[1, 3, 4]),
        ("friends.@count == 0", &[3, 4]),
        ("prices['eur'] == 10", &[1]),
        ("prices.eur < 8", &[2]),
        ("prices.@keys == 'usd'", &[1]),
        ("prices.@values > 11", &[1]),
        ("prices.@count == 1", &[2]),
        ("prices > 11", &[1]),
        ("ALL prices.@values >= 10", &[1, 3, 4]),
        ("born == T1:0", &[1]),
        ("born > 1970-01-01@00:00:01", &[2]),
        ("born BETWEEN {T0:0, T1:500000000}", &[1]),
        ("avatar == B64\"AQID\"", &[1]),
        ("avatar BEGINSWITH B64\"AQ==\"", &[1]),
        ("oid == oid(5f1b2c3d4e5f6a7b8c9d0e1f)", &[1]),
        ("uuid == uuid(123e4567-e89b-12d3-a456-426614174000)", &[2]),
        ("flag == true", &[1]),
        ("flag == FALSE", &[2]),
        ("NOT flag == true", &[2, 3, 4]),
        ("!(flag == true)", &[2, 3, 4]),
        ("nick == null", &[1, 2, 3, 4]),
        ("age IN {25, 35}", &[2, 3]),
        ("age IN {}", &[]),
        ("'red' IN tags", &[1, 4]),
        ("age BETWEEN {25, 30}", &[1, 2]),
        ("TRUEPREDICATE", &[1, 2, 3, 4]),
        ("FALSEPREDICATE", &[]),
        ("age > 20 AND name BEGINSWITH 'A' OR age == 35", &[1, 3]),
        ("age > 20 && (name == 'bob' || name == 'Carol')", &[2, 3]),
        ("not (age > 20 and age < 33)", &[3, 4]),
        ("_id == 3", &[3]),
        ("_id IN {1, 4}", &[1, 4]),
        ("age == score", &[4]),
    ];
    for (text, expected) in cases {
        assert_eq!(&keys(&store, text, &[]), expected, "{text}");
    }
}

#[test]
fn sort_distinct_and_limit_apply_in_order() {
    let store = store();
    assert_eq!(
        keys(&store, "TRUEPREDICATE SORT(age DESC)", &[]),
        [3, 1, 2, 4]
    );
    assert_eq!(
        keys(&store, "TRUEPREDICATE SORT(age ASC)", &[]),
        [4, 2, 1, 3]
    );
    assert_eq!(
        keys(&store, "age != 30 SORT(address.city ASC, name DESC)", &[]),
        [4, 3, 2]
    );
    assert_eq!(
        keys(&store, "TRUEPREDICATE SORT(name ASC) LIMIT(2)", &[]),
        [1, 3]
    );
    assert_eq!(
        keys(&store, "TRUEPREDICATE LIMIT(2) SORT(name DESC)", &[]),
        [2, 1]
    );
    assert_eq!(
        keys(&store, "TRUEPREDICATE LIMIT(0)", &[]),
        Vec::<i64>::new()
    );
    assert_eq!(keys(&store, "TRUEPREDICATE DISTINCT(flag)", &[]), [1, 2, 3]);
    assert_eq!(
        keys(
            &store,
            "TRUEPREDICATE SORT(age DESC) DISTINCT(address.city)",
            &[]
        ),
        [3, 1, 2]
    );
    assert_eq!(
        keys(&store, "TRUEPREDICATE SORT(tags.@count DESC, _id ASC)", &[]),
        [1, 2, 4, 3]
    );
    let err = parse("TRUEPREDICATE")
        .unwrap()
        .run(&store, "Nope", &[])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "at offset 0: expected a collection that is in the schema, found \"Nope\""
    );
}

#[test]
fn arguments_are_substituted_at_evaluation() {
    let store = store();
    assert_eq!(keys(&store, "age > $0", &[Value::Int(26)]), [1, 3]);
    assert_eq!(keys(&store, "$0 < age", &[Value::Int(26)]), [1, 3]);
    assert_eq!(keys(&store, "name BEGINSWITH[c] $0", &["a".into()]), [1]);
    assert_eq!(keys(&store, "age IN $0", &[ints(&[25, 30])]), [1, 2]);
    assert_eq!(
        keys(
            &store,
            "age IN $0",
            &[Value::set_from(vec![Value::Int(35)])]
        ),
        [3]
    );
    assert_eq!(
        keys(&store, "age IN {$1, 30}", &[Value::Null, Value::Int(25)]),
        [1, 2]
    );
    assert_eq!(
        keys(
            &store,
            "age BETWEEN {$0, $1}",
            &[Value::Int(26), Value::Int(40)]
        ),
        [1, 3]
    );
    assert_eq!(keys(&store, "owner == $0", &[link(2)]), [1]);

    let run = |text: &str, args: &[Value]| parse(text).unwrap().run(&store, "Person", args);
    assert_eq!(
        run("age > $1", &[Value::Int(1)]).unwrap_err().to_string(),
        "at offset 6: expected the only argument given ($0), found \"$1\""
    );
    assert_eq!(
        run("age > $3", &[Value::Int(1), Value::Int(2)])
            .unwrap_err()
            .to_string(),
        "at offset 6: expected one of the 2 arguments given ($0 to $1), found \"$3\""
    );
    assert_eq!(
        run("age > $0", &[]).unwrap_err().to_string(),
        "at offset 6: expected an argument, but none were given, found \"$0\""
    );
    assert_eq!(
        run("age IN $0", &[Value::Int(1)]).unwrap_err().to_string(),
        "at offset 7: expected a list or set argument after IN, found \"$0\" holding a int"
    );
    assert_eq!(run("age == $0", &[ints(&[1])]).unwrap_err().position, 7);
    let doc = Document::new();
    assert!(parse("$0 == 1")
        .unwrap()
        .matches(&doc, &store, &[Value::Int(1)])
        .unwrap());
}

#[test]
fn bind_produces_self_contained_text() {
    let query = parse("age > $0 AND name IN $1 AND born == $2 OR avatar == $3").unwrap();
    let bound = query
        .bind(&[
            Value::Int(3),
            strings(&["a", "b"]),
            Value::Date(-1_500),
            Value::Binary(vec![255]),
        ])
        .unwrap();
    let text = bound.to_string();
    assert_eq!(
        text,
        "age > 3 AND name IN {\"a\", \"b\"} AND born == T-1:-500000000 OR avatar == B64\"/w==\""
    );
    assert_eq!(parse(&text).unwrap(), bound);
    let store = store();
    assert_eq!(
        bound.run(&store, "Person", &[]).unwrap(),
        query
            .run(
                &store,
                "Person",
                &[
                    Value::Int(3),
                    strings(&["a", "b"]),
                    Value::Date(-1_500),
                    Value::Binary(vec![255])
                ]
            )
            .unwrap()
    );
    let err = parse("owner == $0").unwrap().bind(&[link(1)]).unwrap_err();
    assert_eq!(err.position, 9);
    assert!(err.expected.contains("owner._id == $0"), "{err}");
    assert!(parse("x IN $0")
        .unwrap()
        .bind(&[Value::List(vec![link(1)].into())])
        .is_err());
    assert!(parse("x == $0").unwrap().bind(&[ints(&[1])]).is_err());
    assert!(parse("x == $1").unwrap().bind(&[Value::Int(1)]).is_err());
    assert_eq!(
        parse("x BETWEEN {$0, 2}")
            .unwrap()
            .bind(&[Value::Double(0.5)])
            .unwrap()
            .to_string(),
        "x BETWEEN {0.5, 2}"
    );
}

#[test]
fn display_is_canonical() {
    let cases = [
        (
            "a = 1 and b != 'x' or not c < 2.5",
            "a == 1 AND b != \"x\" OR NOT c < 2.5",
        ),
        (
            "(a == 1 or b == 2) and c == 3",
            "(a == 1 OR b == 2) AND c == 3",
        ),
        (
            "a == 1 and (b == 2 and c == 3)",
            "a == 1 AND (b == 2 AND c == 3)",
        ),
        ("!(a == 1)", "NOT a == 1"),
        ("not (a == 1 || b == 2)", "NOT (a == 1 OR b == 2)"),
        ("some tags == 'x'", "ANY tags == \"x\""),
        ("x == nil", "x == null"),
        ("d['k'] == 1 && d.k == 2", "d[\"k\"] == 1 AND d.k == 2"),
        ("tags.@COUNT > 1", "tags.@count > 1"),
        ("name contains[c] 'a\"b'", "name CONTAINS[c] \"a\\\"b\""),
        ("name ==[c] 'é\\n'", "name ==[c] \"é\\n\""),
        (
            "age > 1 limit(5) sort(name asc, age descending) distinct(name)",
            "age > 1 LIMIT(5) SORT(name ASC, age DESC) DISTINCT(name)",
        ),
        ("truepredicate sort(a)", "TRUEPREDICATE SORT(a ASC)"),
        ("born == 2020-01-01@00:00:00", "born == T1577836800:0"),
        (
            "x == -inf OR x == NaN OR x == 1e300 OR x == 1.0",
            "x == -inf OR x == nan OR x == 1e300 OR x == 1.0",
        ),
        (
            "x == oid(5F1B2C3D4E5F6A7B8C9D0E1F)",
            "x == oid(5f1b2c3d4e5f6a7b8c9d0e1f)",
        ),
        ("x IN {1,'a',  $2}", "x IN {1, \"a\", $2}"),
        ("ALL x.y BETWEEN {1, 2}", "ALL x.y BETWEEN {1, 2}"),
        ("falsepredicate", "FALSEPREDICATE"),
    ];
    for (input, canonical) in cases {
        let query = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(query.to_string(), canonical, "{input}");
        assert_eq!(parse(canonical).unwrap(), query, "{input}");
    }
}

#[test]
fn parse_errors_name_position_expectation_and_input() {
    let deep = format!("{}a == 1", "NOT ".repeat(150));
    let long_path = format!("a{} == 1", ".b".repeat(70));
    let cases: Vec<(&str, usize, &str)> = vec![
        ("age > 3 && x ==", 15, "expected a value after \"==\", found end of query"),
        ("name = ", 7, "expected a value after \"=\", found end of query"),
        ("", 0, "expected a predicate: a comparison, \"(\", NOT or TRUEPREDICATE, found end of query"),
        ("age", 3, "expected a comparison operator such as \"==\" after \"age\", found end of query"),
        ("age 5", 4, "expected a comparison operator such as \"==\" after \"age\", found \"5\""),
        ("age == 1 name == 2", 9, "expected \"AND\", \"OR\", SORT, DISTINCT, LIMIT or the end of the query, found \"name\""),
        ("(age == 1", 9, "expected \")\" to close the \"(\" at offset 0, found end of query"),
        ("age < [c] 3", 6, "expected a value after \"<\" (\"[c]\" only follows ==, !=, BEGINSWITH, ENDSWITH, CONTAINS and LIKE), found \"[\""),
        ("age ==[x] 3", 7, "expected \"c\" in the case-insensitivity flag \"[c]\", found \"x\""),
        ("age BETWEEN {1}", 12, "expected exactly two values {low, high} after \"BETWEEN\", found \"{1}\""),
        ("age BETWEEN 1", 12, "expected two values {low, high} after \"BETWEEN\", found \"1\""),
        ("age IN 5", 7, "expected a list {...}, an argument or a key path after \"IN\", found \"5\""),
        ("x IN {a}", 6, "expected a literal value or an argument in the list, found \"a\""),
        ("x IN {1 2}", 8, "expected \",\" or \"}\" to close the list at offset 5, found \"2\""),
        ("name == 'abc", 12, "expected a closing ' for the string at offset 8, found end of query"),
        ("tags.@foo > 1", 5, "expected @count, @size, @keys, @values, @min, @max, @sum or @avg, found \"@foo\""),
        ("a. == 1", 3, "expected a property name or an @operation after \".\", found \"==\""),
        ("d[1] == 1", 2, "expected a quoted dictionary key after \"[\", found \"1\""),
        ("ANY == 1", 4, "expected a key path after \"ANY\", found \"==\""),
        ("age == 1 LIMIT(-1)", 15, "expected a whole number of at least 0 in LIMIT(...), found \"-1\""),
        ("age == 1 SORT(a ASC, )", 21, "expected a key path in SORT(...), found \")\""),
        ("age == 1 SORT(a) age", 17, "expected SORT, DISTINCT, LIMIT or the end of the query, found \"age\""),
        ("x == #", 5, "expected a key path, a value, an operator or a parenthesis, found \"#\""),
        ("x == 1970-02-30@00:00:00", 5, "expected a valid date and time (YYYY-MM-DD@HH:MM:SS), found \"1970-02-30@00:00:00\""),
        (deep.as_str(), 400, "expected at most 100 nested parentheses and NOTs, found \"NOT\""),
        (long_path.as_str(), 0, "expected a key path of at most 64 steps, found a longer one"),
    ];
    for (input, position, message) in cases {
        let err = parse(input).unwrap_err();
        assert_eq!(err.position, position, "{input}: {err}");
        assert_eq!(
            err.to_string(),
            format!("at offset {position}: {message}"),
            "{input}"
        );
    }
}

#[test]
fn nesting_up_to_the_limit_parses() {
    let nested = format!("{}a == 1{}", "(".repeat(100), ")".repeat(100));
    let query = parse(&nested).unwrap();
    assert_eq!(query.to_string(), "a == 1");
    let nots = format!("{}a == 1", "NOT ".repeat(100));
    assert_eq!(
        parse(&parse(&nots).unwrap().to_string()).unwrap(),
        parse(&nots).unwrap()
    );
    assert!(parse(&format!("{}a == 1{}", "(".repeat(101), ")".repeat(101))).is_err());
}

#[test]
fn validation_checks_paths_and_types() {
    let schema = schema();
    let ok = [
        "age > 5 AND name BEGINSWITH 'a' SORT(age ASC) DISTINCT(address.city)",
        "age == $0 AND $1 == name",
        "age == score AND price > 1 AND age == 1.5",
        "mixed == 'x' OR mixed > 5 OR mixed.@size > 1",
        "tags BEGINSWITH 'r' AND ALL tags == 'x'",
        "prices.@keys == 'eur' AND prices['eur'] > 1 AND prices.usd == null",
        "scores.@sum > 1 AND friends.age.@avg > 1 OR friends.born.@max > T0:0",
        "owner == null AND owner._id == 1 AND owner.owner.address.city == 'x'",
        "avatar BEGINSWITH B64\"AA==\" AND avatar.@size > 1 AND name.@count > 1",
        "'a' IN tags AND age IN {1, 2.5, null} AND age BETWEEN {1, 2}",
        "TRUEPREDICATE SORT(tags.@count DESC, owner.name ASC) LIMIT(3)",
    ];
    for text in ok {
        let query = parse(text).unwrap();
        assert_eq!(query.validate(&schema, "Person"), Ok(()), "{text}");
    }
    let bad = [
        ("nmae == 'x'", "at offset 0: expected a property of \"Person\", found \"nmae\""),
        ("age > 1 AND owner.nmae == 'x'", "at offset 12: expected a property of \"Person\", found \"nmae\""),
        ("address.street == 'x'", "at offset 0: expected a property of \"Address\", found \"street\""),
        ("age == 'x'", "at offset 0: expected a number to compare with \"age\", found \"x\" (string)"),
        ("5 == name", "at offset 5: expected a string to compare with \"name\", found 5 (int)"),
        ("age.@count > 1", "at offset 0: expected a list, set, dictionary, string or binary property before \"@count\", found \"age\" of type int?"),
        ("ALL name == 'x'", "at offset 0: expected a list, set or dictionary in the key path after ALL, found \"name\" of type string?"),
        ("name.city == 1", "at offset 0: expected a link or embedded object before \".city\", found \"name\" of type string?"),
        ("age BEGINSWITH 'x'", "at offset 0: expected a string property before \"BEGINSWITH\", found \"age\" of type int?"),
        ("flag < true", "at offset 0: expected a property that can be ordered with \"<\", found \"flag\" of type bool?"),
        ("tags.@keys == 'x'", "at offset 0: expected a dictionary property before \"@keys\", found \"tags\" of type list<string?>"),
        ("tags.@sum > 1", "at offset 0: expected numbers (or dates, for @min and @max) before \"@sum\", found \"tags\" of type list<string?>"),
        ("age.@max > 1", "at offset 0: expected a list, set or dictionary before \"@max\", found \"age\" of type int?"),
        ("age == name", "at offset 0: expected a property comparable with \"name\" of type string?, found \"age\" of type int?"),
        ("TRUEPREDICATE SORT(tags ASC)", "at offset 19: expected a key path to a single value in SORT(...), found \"tags\" of type string?"),
        ("address.zip IN {1, 'x'}", "at offset 0: expected a number to compare with \"address.zip\", found \"x\" (string)"),
        ("_id == 'x'", "at offset 0: expected a number to compare with \"_id\", found \"x\" (string)"),
        ("owner == 1", "at offset 0: expected a link to \"Person\" to compare with \"owner\", found 1 (int)"),
        ("address == 1", "at offset 0: expected null (embedded objects only compare with null) to compare with \"address\", found 1 (int)"),
    ];
    for (text, message) in bad {
        let err = parse(text)
            .unwrap()
            .validate(&schema, "Person")
            .unwrap_err();
        assert_eq!(err.to_string(), message, "{text}");
    }
    assert_eq!(
        parse("a == 1")
            .unwrap()
            .validate(&schema, "Nope")
            .unwrap_err()
            .to_string(),
        "at offset 0: expected a collection that is in the schema, found \"Nope\""
    );
}

#[test]
fn simple_predicates_scale_to_many_documents() {
    let mut store = Store {
        schema: schema(),
        ..Store::default()
    };
    let collection = store.objects.entry("Person".into()).or_default();
    for i in 0..100_000i64 {
        let doc = object(vec![
            ("age", Value::Int(i % 100)),
            ("name", Value::String(format!("n{i}"))),
        ]);
        collection.insert(PrimaryKey::Int(i), doc);
    }
    let query = parse("age >= 90 AND name BEGINSWITH 'n1'").unwrap();
    let found = query.run(&store, "Person", &[]).unwrap();
    // n1, n10..n19, n100..n199, n1000..n1999, n10000..n19999 with age >= 90.
    let expected = (0..100_000i64)
        .filter(|i| i % 100 >= 90 && format!("n{i}").starts_with("n1"))
        .count();
    assert_eq!(found.len(), expected);
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// Words that cannot start a bare key path.
const RESERVED: [&str; 14] = [
    "not",
    "any",
    "some",
    "all",
    "none",
    "true",
    "false",
    "null",
    "nil",
    "inf",
    "infinity",
    "nan",
    "truepredicate",
    "falsepredicate",
];

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,5}"
}

fn first_ident() -> impl Strategy<Value = String> {
    ident().prop_filter("reserved word", |w| {
        !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w))
    })
}

fn literal() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(|d| Value::Double(if d.is_nan() { f64::NAN } else { d })),
        any::<String>().prop_map(Value::String),
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(Value::Binary),
        any::<i64>().prop_map(Value::Date),
        any::<[u8; 12]>().prop_map(|b| Value::ObjectId(ObjectId(b))),
        any::<[u8; 16]>().prop_map(|b| Value::Uuid(Uuid(b))),
        (any::<i32>(), 0u32..1000)
            .prop_map(|(i, f)| { Value::Decimal(Decimal::parse(&format!("{i}.{f}")).unwrap()) }),
    ]
    .boxed()
}

fn key_path(quantified: bool) -> BoxedStrategy<KeyPath> {
    let quantifier = if quantified {
        proptest::option::of(prop_oneof![
            Just(Quantifier::Any),
            Just(Quantifier::All),
            Just(Quantifier::None)
        ])
        .boxed()
    } else {
        Just(None).boxed()
    };
    let step = prop_oneof![
        ident().prop_map(Step::Property),
        any::<String>().prop_map(Step::Key)
    ];
    let tail = proptest::option::of(prop_oneof![
        Just(Tail::Count),
        Just(Tail::Size),
        Just(Tail::Keys),
        Just(Tail::Values),
        Just(Tail::Min),
        Just(Tail::Max),
        Just(Tail::Sum),
        Just(Tail::Avg),
    ]);
    (
        quantifier,
        ident(),
        first_ident(),
        proptest::collection::vec(step, 0..3),
        tail,
    )
        .prop_map(|(quantifier, any_first, bare_first, rest, tail)| {
            let first = if quantifier.is_some() {
                any_first
            } else {
                bare_first
            };
            let mut steps = vec![Step::Property(first)];
            steps.extend(rest);
            KeyPath {
                quantifier,
                steps,
                tail,
                offset: Offset(0),
            }
        })
        .boxed()
}

fn scalar_operand() -> BoxedStrategy<Operand> {
    prop_oneof![
        literal().prop_map(Operand::Literal),
        (0usize..20).prop_map(|index| Operand::Arg(Arg {
            index,
            offset: Offset(0)
        })),
    ]
    .boxed()
}

fn operand() -> BoxedStrategy<Operand> {
    prop_oneof![scalar_operand(), key_path(true).prop_map(Operand::Path)].boxed()
}

fn comparison() -> BoxedStrategy<Predicate> {
    let op = prop_oneof![
        Just(CompareOp::Eq),
        Just(CompareOp::Ne),
        Just(CompareOp::Lt),
        Just(CompareOp::Le),
        Just(CompareOp::Gt),
        Just(CompareOp::Ge),
        Just(CompareOp::BeginsWith),
        Just(CompareOp::EndsWith),
        Just(CompareOp::Contains),
        Just(CompareOp::Like),
        Just(CompareOp::In),
        Just(CompareOp::Between),
    ];
    (
        operand(),
        op,
        any::<bool>(),
        operand(),
        proptest::collection::vec(scalar_operand(), 0..4),
        key_path(true),
        (scalar_operand(), scalar_operand()),
        0u8..3,
    )
        .prop_map(|(lhs, op, flag, rhs, list, path, bounds, in_form)| {
            let rhs = match op {
                CompareOp::Between => Operand::List(vec![bounds.0, bounds.1]),
                CompareOp::In => match (in_form, rhs) {
                    (0, _) => Operand::List(list),
                    (1, _) => Operand::Path(path),
                    (_, Operand::Arg(arg)) => Operand::Arg(arg),
                    (_, _) => Operand::List(list),
                },
                _ => rhs,
            };
            Predicate::Compare(Box::new(Comparison {
                lhs,
                op,
                case_insensitive: flag && op.takes_case_flag(),
                rhs,
                offset: Offset(0),
            }))
        })
        .boxed()
}

fn predicate() -> impl Strategy<Value = Predicate> {
    let leaf = prop_oneof![
        Just(Predicate::True),
        Just(Predicate::False),
        comparison(),
        comparison(),
        comparison(),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Predicate::And),
            proptest::collection::vec(inner.clone(), 2..4).prop_map(Predicate::Or),
            inner.prop_map(|p| Predicate::Not(Box::new(p))),
        ]
    })
}

fn clause() -> impl Strategy<Value = Clause> {
    prop_oneof![
        proptest::collection::vec((key_path(false), any::<bool>()), 1..3).prop_map(Clause::Sort),
        proptest::collection::vec(key_path(false), 1..3).prop_map(Clause::Distinct),
        (0..=i64::MAX as u64).prop_map(Clause::Limit),
    ]
}

fn query() -> impl Strategy<Value = Query> {
    (predicate(), proptest::collection::vec(clause(), 0..3))
        .prop_map(|(predicate, clauses)| Query { predicate, clauses })
}

/// A document for the reference-evaluation property: an optional int, a string and an int list.
#[derive(Clone, Debug)]
struct Sample {
    a: Option<i64>,
    s: String,
    tags: Vec<i64>,
}

impl Sample {
    fn document(&self) -> Document {
        let mut doc = Document::new();
        if let Some(a) = self.a {
            doc.insert("a".into(), Value::Int(a));
        }
        doc.insert("s".into(), Value::String(self.s.clone()));
        doc.insert("tags".into(), ints(&self.tags));
        doc
    }
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        proptest::option::of(-3i64..3),
        "[abAB]{0,3}",
        proptest::collection::vec(-3i64..3, 0..4),
    )
        .prop_map(|(a, s, tags)| Sample { a, s, tags })
}

/// A predicate over [`Sample`]s, written both as RQL text and as a direct Rust check.
#[derive(Clone, Debug)]
enum Reference {
    Int(&'static str, i64),
    Str(&'static str, bool, String),
    Tags(&'static str, &'static str, i64),
    In(Vec<i64>),
    Between(i64, i64),
    Not(Box<Reference>),
    And(Box<Reference>, Box<Reference>),
    Or(Box<Reference>, Box<Reference>),
}

fn int_test(op: &str, x: i64, k: i64) -> bool {
    match op {
        "==" => x == k,
        "!=" => x != k,
        "<" => x < k,
        "<=" => x <= k,
        ">" => x > k,
        _ => x >= k,
    }
}

/// Glob matching by plain recursion, independent of the evaluator's iterative version.
fn glob(text: &[char], pattern: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|i| glob(&text[i..], rest)),
        Some((&c, rest)) => match text.split_first() {
            Some((&t, text_rest)) => (c == '?' || c == t) && glob(text_rest, rest),
            None => false,
        },
    }
}

impl Reference {
    fn text(&self) -> String {
        match self {
            Reference::Int(op, k) => format!("a {op} {k}"),
            Reference::Str(op, ci, lit) => {
                format!("s {op}{} '{lit}'", if *ci { "[c]" } else { "" })
            }
            Reference::Tags(quantifier, op, k) => format!("{quantifier} tags {op} {k}"),
            Reference::In(items) => format!(
                "a IN {{{}}}",
                items
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Reference::Between(low, high) => format!("a BETWEEN {{{low}, {high}}}"),
            Reference::Not(inner) => format!("NOT ({})", inner.text()),
            Reference::And(x, y) => format!("({}) AND ({})", x.text(), y.text()),
            Reference::Or(x, y) => format!("({}) || ({})", x.text(), y.text()),
        }
    }

    fn check(&self, sample: &Sample) -> bool {
        match self {
            Reference::Int(op, k) => match sample.a {
                Some(x) => int_test(op, x, *k),
                None => *op == "!=",
            },
            Reference::Str(op, ci, lit) => {
                let fold = |s: &str| if *ci { s.to_lowercase() } else { s.to_owned() };
                let (s, lit) = (fold(&sample.s), fold(lit));
                match *op {
                    "==" => s == lit,
                    "!=" => s != lit,
                    "BEGINSWITH" => s.starts_with(&lit),
                    "ENDSWITH" => s.ends_with(&lit),
                    "CONTAINS" => s.contains(&lit),
                    _ => glob(
                        &s.chars().collect::<Vec<_>>(),
                        &lit.chars().collect::<Vec<_>>(),
                    ),
                }
            }
            Reference::Tags(quantifier, op, k) => {
                let mut hits = sample.tags.iter().map(|t| int_test(op, *t, *k));
                match *quantifier {
                    "ANY" => hits.any(|h| h),
                    "ALL" => hits.all(|h| h),
                    _ => !hits.any(|h| h),
                }
            }
            Reference::In(items) => sample.a.is_some_and(|a| items.contains(&a)),
            Reference::Between(low, high) => sample.a.is_some_and(|a| *low <= a && a <= *high),
            Reference::Not(inner) => !inner.check(sample),
            Reference::And(x, y) => x.check(sample) && y.check(sample),
            Reference::Or(x, y) => x.check(sample) || y.check(sample),
        }
    }
}

fn reference() -> impl Strategy<Value = Reference> {
    let int_op = prop_oneof![
        Just("=="),
        Just("!="),
        Just("<"),
        Just("<="),
        Just(">"),
        Just(">=")
    ];
    let str_op = prop_oneof![
        Just("=="),
        Just("!="),
        Just("BEGINSWITH"),
        Just("ENDSWITH"),
        Just("CONTAINS"),
        Just("LIKE")
    ];
    let quantifier = prop_oneof![Just("ANY"), Just("ALL"), Just("NONE")];
    let leaf = prop_oneof![
        (int_op.clone(), -3i64..3).prop_map(|(op, k)| Reference::Int(op, k)),
        (str_op, any::<bool>(), "[abAB*?]{0,3}")
            .prop_map(|(op, ci, lit)| Reference::Str(op, ci, lit)),
        (quantifier, int_op, -3i64..3).prop_map(|(q, op, k)| Reference::Tags(q, op, k)),
        proptest::collection::vec(-3i64..3, 0..3).prop_map(Reference::In),
        (-3i64..3, -3i64..3).prop_map(|(low, high)| Reference::Between(low, high)),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|r| Reference::Not(Box::new(r))),
            (inner.clone(), inner.clone())
                .prop_map(|(x, y)| Reference::And(Box::new(x), Box::new(y))),
            (inner.clone(), inner).prop_map(|(x, y)| Reference::Or(Box::new(x), Box::new(y))),
        ]
    })
}

proptest! {
    /// Arbitrary text never panics the parser, and whatever parses round-trips through Display.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        if let Ok(query) = parse(&text) {
            let canonical = query.to_string();
            prop_assert_eq!(parse(&canonical), Ok(query));
        }
    }

    /// Text built from query tokens (so that much of it parses) never panics and round-trips.
    #[test]
    fn token_soup_never_panics(words in proptest::collection::vec(prop_oneof![
        Just("a"), Just("b.c"), Just("=="), Just("!="), Just("<"), Just(">="), Just("AND"),
        Just("||"), Just("NOT"), Just("("), Just(")"), Just("{"), Just("}"), Just(","),
        Just("1"), Just("-2.5"), Just("'x'"), Just("$0"), Just("IN"), Just("BETWEEN"),
        Just("[c]"), Just("ANY"), Just("ALL"), Just("@count"), Just("."), Just("['k']"),
        Just("SORT(a ASC)"), Just("LIMIT(1)"), Just("TRUEPREDICATE"), Just("null"),
        Just("BEGINSWITH"), Just("T1:2"), Just("-inf"), Just("oid("),
    ], 0..12)) {
        let text = words.join(" ");
        if let Ok(query) = parse(&text) {
            let canonical = query.to_string();
            prop_assert_eq!(parse(&canonical), Ok(query));
        }
    }

    /// Generated queries print as text that parses back to the same query.
    #[test]
    fn generated_queries_round_trip(query in query()) {
        let text = query.to_string();
        let parsed = parse(&text);
        prop_assert_eq!(parsed, Ok(query), "{}", text);
    }

    /// Evaluation agrees with a direct reference evaluation on generated documents.
    #[test]
    fn evaluation_agrees_with_reference(reference in reference(), samples in proptest::collection::vec(sample(), 1..6)) {
        let text = reference.text();
        let query = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        let store = Store::default();
        for sample in &samples {
            let got = query.matches(&sample.document(), &store, &[]);
            prop_assert_eq!(got, Ok(reference.check(sample)), "{} on {:?}", text, sample);
        }
    }

    /// Binding literal arguments gives the same answers as passing them at evaluation.
    #[test]
    fn bind_agrees_with_arguments(k in -3i64..3, list in proptest::collection::vec(-3i64..3, 0..3), samples in proptest::collection::vec(sample(), 1..6)) {
        let query = parse("a > $0 OR a IN $1 OR ANY tags == $0").unwrap();
        let args = [Value::Int(k), ints(&list)];
        let bound = query.bind(&args).unwrap();
        prop_assert_eq!(parse(&bound.to_string()), Ok(bound.clone()));
        let store = Store::default();
        for sample in &samples {
            let doc = sample.document();
            prop_assert_eq!(bound.matches(&doc, &store, &[]), query.matches(&doc, &store, &args));
        }
    }
}
