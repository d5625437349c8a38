//! `GET /api`: a readable reference rendered from the same OpenAPI document as
//! `/api/openapi.json`, with Herald's own styles and no external assets.

use askama::Template;
use serde_json::Value;

use crate::web::view::Site;

pub struct Operation {
    anchor: String,
    method: String,
    path: String,
    summary: String,
    params: Vec<(String, String)>,
    body: Option<String>,
    body_required: bool,
    responses: Vec<(String, String, Option<String>)>,
}

pub struct Schema {
    name: String,
    description: String,
    /// (name, type, required, description)
    fields: Vec<(String, String, bool, String)>,
}

#[derive(Template)]
#[template(path = "public/api.html")]
struct ReferencePage {
    site: Site,
    operations: Vec<Operation>,
    schemas: Vec<Schema>,
}

fn ref_name(schema: &Value) -> Option<String> {
    let r = schema["$ref"]
        .as_str()
        .or_else(|| schema["items"]["$ref"].as_str())
        .or_else(|| {
            schema["oneOf"]
                .as_array()?
                .iter()
                .find_map(|s| s["$ref"].as_str())
        })?;
    r.rsplit('/').next().map(str::to_owned)
}

fn type_name(schema: &Value) -> String {
    if let Some(name) = ref_name(schema) {
        return if schema["items"].is_object() {
            format!("[{name}]")
        } else {
            name
        };
    }
    match &schema["type"] {
        Value::String(t) if t == "array" => format!("[{}]", type_name(&schema["items"])),
        Value::String(t) => schema["format"]
            .as_str()
            .map_or_else(|| t.clone(), |f| format!("{t} ({f})")),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => schema["enum"].as_array().map_or_else(
            || "object".to_owned(),
            |values| {
                values
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" | ")
            },
        ),
    }
}

/// Render the reference page for `doc`.
pub fn render(site: Site, doc: &Value) -> Result<String, askama::Error> {
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let summary = op["description"]
                .as_str()
                .or_else(|| op["summary"].as_str())
                .unwrap_or_default()
                .to_owned();
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_owned(),
                        p["description"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let body = op["requestBody"]["content"]["application/json"]["schema"].clone();
            let responses = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(code, r)| {
                    (
                        code.clone(),
                        r["description"].as_str().unwrap_or_default().to_owned(),
                        ref_name(&r["content"]["application/json"]["schema"]),
                    )
                })
                .collect();
            operations.push(Operation {
                anchor: format!("{method}-{path}")
                    .replace(['/', '{', '}'], "-")
                    .trim_matches('-')
                    .to_owned(),
                method: method.to_uppercase(),
                path: path.clone(),
                summary,
                params,
                body: ref_name(&body),
                body_required: op["requestBody"]["required"].as_bool().unwrap_or(false),
                responses,
            });
        }
    }
    let schemas = doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            let required: Vec<&str> = s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            Schema {
                name: name.clone(),
                description: s["description"].as_str().unwrap_or_default().to_owned(),
                fields: s["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(field, f)| {
                        (
                            field.clone(),
                            type_name(f),
                            required.contains(&field.as_str()),
                            f["description"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    ReferencePage {
        site,
        operations,
        schemas,
    }
    .render()
}
