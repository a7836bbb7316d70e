//! Schema & roles: what the server enforces.

use leptos::prelude::*;
use serde::Deserialize;

use crate::widgets::{load, show_load};
use crate::{api, console};

/// `GET /api/admin/schema`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SchemaInfo {
    /// The schema in Eddy's schema JSON.
    pub schema: serde_json::Value,
    /// Whether clients may add collections and properties.
    pub development_mode: bool,
    /// The role permissions the server enforces, per collection.
    pub roles: Vec<serde_json::Value>,
    /// What the roles list means.
    pub roles_note: String,
}

/// One row of the properties table: (collection, kind, property, type).
pub fn schema_rows(schema: &serde_json::Value) -> Vec<(String, String, String, String)> {
    let mut rows = Vec::new();
    let Some(collections) = schema.as_object() else {
        return rows;
    };
    for (name, def) in collections {
        let kind = if def["asymmetric"] == true {
            "asymmetric"
        } else if def["embedded"] == true {
            "embedded"
        } else {
            "top-level"
        };
        if let Some(properties) = def["properties"].as_object() {
            for (prop, ty) in properties {
                let ty = match ty {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                rows.push((name.clone(), kind.to_owned(), prop.clone(), ty));
            }
        }
    }
    rows
}

/// The schema and roles.
#[component]
pub fn SchemaPage() -> impl IntoView {
    let admin = console().key_text();
    let info = load(async move { api::get_json::<SchemaInfo>("/api/admin/schema", &admin).await });
    view! {
        <section data-testid="page-schema">
            <h1>"Schema & roles"</h1>
            {show_load(info, |info: SchemaInfo| {
                let rows = schema_rows(&info.schema);
                view! {
                    <p data-testid="development-mode">
                        {if info.development_mode {
                            "Development mode: clients may add collections and properties."
                        } else {
                            "Schema enforced: clients may not change it."
                        }}
                    </p>
                    <table class="table" data-testid="schema">
                        <thead><tr><th>"collection"</th><th>"kind"</th><th>"property"</th><th>"type"</th></tr></thead>
                        <tbody>
                            {rows
                                .into_iter()
                                .map(|(c, k, p, t)| view! { <tr><td>{c}</td><td>{k}</td><td>{p}</td><td><code>{t}</code></td></tr> })
                                .collect_view()}
                        </tbody>
                    </table>
                    <h2>"Roles"</h2>
                    <p data-testid="roles">
                        {if info.roles.is_empty() { info.roles_note.clone() } else { serde_json::Value::Array(info.roles.clone()).to_string() }}
                    </p>
                }
            })}
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_json_becomes_rows() {
        let schema = serde_json::json!({
            "Item": {"primaryKey": "_id", "properties": {"_id": "int", "n": {"type": "int", "indexed": true}}},
            "Log": {"asymmetric": true, "primaryKey": "_id", "properties": {"_id": "objectId"}},
        });
        let rows = schema_rows(&schema);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[2],
            (
                "Log".into(),
                "asymmetric".into(),
                "_id".into(),
                "objectId".into()
            )
        );
        assert!(rows[1].3.contains("indexed"));
        assert!(schema_rows(&serde_json::json!(5)).is_empty());
    }
}
