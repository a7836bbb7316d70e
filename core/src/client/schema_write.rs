//! Adding an app's declared schema to a client file: the additive migration every driver runs when
//! it opens a file, written as a local change so that a development-mode server learns the schema
//! from its clients.

use std::fmt;

use crate::client::ClientSession;
use crate::schema::Schema;
use crate::store::ApplyError;

/// Why a declared schema could not be added to a client file.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SchemaWriteError {
    /// The file already defines a collection differently (its kind or primary-key type).
    Collection(String),
    /// The file already defines a property differently.
    Property {
        /// The collection.
        collection: String,
        /// The property.
        property: String,
    },
    /// The store refused one of the schema instructions.
    Apply(ApplyError),
}

impl fmt::Display for SchemaWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            SchemaWriteError::Collection(name) => format!("collection {name}"),
            SchemaWriteError::Property {
                collection,
                property,
            } => format!("{collection}.{property}"),
            SchemaWriteError::Apply(e) => return write!(f, "cannot add the schema: {e}"),
        };
        write!(
            f,
            "the schema differs from the stored one ({what}); only new collections and properties can be added"
        )
    }
}

impl std::error::Error for SchemaWriteError {}

impl ClientSession {
    /// Adds the collections and properties of `declared` that the file lacks, in one local write
    /// (synced like any change). A collection or property the file defines differently is an
    /// error and nothing is written. Returns the client version of the write, if one was needed.
    pub fn add_declared_schema(
        &mut self,
        now_ms: u64,
        declared: &Schema,
    ) -> Result<Option<u64>, SchemaWriteError> {
        let current = self.store().schema().clone();
        let mut missing = false;
        for collection in declared.collections.values() {
            let Some(existing) = current.collection(&collection.name) else {
                missing = true;
                continue;
            };
            if existing.kind != collection.kind || existing.primary_key != collection.primary_key {
                return Err(SchemaWriteError::Collection(collection.name.clone()));
            }
            for property in collection.properties.values() {
                match existing.properties.get(&property.name) {
                    None => missing = true,
                    Some(stored) if stored != property => {
                        return Err(SchemaWriteError::Property {
                            collection: collection.name.clone(),
                            property: property.name.clone(),
                        })
                    }
                    Some(_) => {}
                }
            }
        }
        if !missing {
            return Ok(None);
        }
        self.write(now_ms, |tx| {
            for collection in declared.collections.values() {
                if current.collection(&collection.name).is_none() {
                    tx.add_collection(&collection.name, collection.kind, collection.primary_key)?;
                }
            }
            for collection in declared.collections.values() {
                let stored = current.collection(&collection.name);
                for property in collection.properties.values() {
                    if stored.is_none_or(|c| !c.properties.contains_key(&property.name)) {
                        tx.add_property(&collection.name, property.clone())?;
                    }
                }
            }
            Ok(())
        })
        .map_err(SchemaWriteError::Apply)?;
        Ok(Some(self.meta().last_client_version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ResetMode, SessionConfig};
    use crate::schema::{CollectionSchema, PrimaryKeyType, Property, ScalarType};

    fn schema(properties: &[(&str, ScalarType)]) -> Schema {
        let mut task = CollectionSchema::top_level("Task", PrimaryKeyType::String);
        for (name, ty) in properties {
            task = task.with(Property::new(*name, ty.clone()));
        }
        let mut schema = Schema::default();
        schema.insert(task);
        schema
    }

    fn empty_session() -> ClientSession {
        ClientSession::new(
            1,
            SessionConfig {
                path: "flx".into(),
                access_token: "token".into(),
                schema: Schema::default(),
                reset_mode: ResetMode::Recover,
                async_open: false,
            },
            None,
        )
    }

    #[test]
    fn a_declared_schema_is_written_once_and_only_what_is_missing() {
        let mut session = empty_session();
        let declared = schema(&[("title", ScalarType::String)]);
        assert_eq!(session.add_declared_schema(1, &declared), Ok(Some(1)));
        assert_eq!(session.store().schema(), &declared);
        assert_eq!(session.pending().len(), 1);
        assert_eq!(session.add_declared_schema(2, &declared), Ok(None));
        assert_eq!(session.pending().len(), 1);

        let wider = schema(&[("title", ScalarType::String), ("done", ScalarType::Bool)]);
        assert_eq!(session.add_declared_schema(3, &wider), Ok(Some(2)));
        assert_eq!(session.store().schema(), &wider);
    }

    #[test]
    fn a_conflicting_definition_is_refused_and_nothing_is_written() {
        let mut session = empty_session();
        session
            .add_declared_schema(1, &schema(&[("title", ScalarType::String)]))
            .unwrap();
        let conflicting = schema(&[("title", ScalarType::Int), ("done", ScalarType::Bool)]);
        let error = session.add_declared_schema(2, &conflicting).unwrap_err();
        assert_eq!(
            error,
            SchemaWriteError::Property {
                collection: "Task".into(),
                property: "title".into()
            }
        );
        assert!(error.to_string().contains("(Task.title)"), "{error}");
        assert_eq!(session.pending().len(), 1);
        assert!(session
            .store()
            .schema()
            .collection("Task")
            .unwrap()
            .properties
            .get("done")
            .is_none());
    }
}
