/*!
The AsyncAPI 3.0 document of the socket side, from the application's
point of view: it receives virtual requests (socket.io events named
`get`, `post`, `put`, `patch`, `delete`, each answered by an
acknowledgement, the JWR) and sends each model's messages (an event named
after the model, its payload told apart by `verb`).

No maintained Rust crate models AsyncAPI 3.0, so the document is these
structs, serialized. The record schemas are the OpenAPI document's (the
same JSON Schema, under the same `#/components/schemas/` names).
*/

use serde::Serialize;
use serde_json::{Value, json};
use topsail_blueprints::RouteInfo;
use topsail_core::model::ModelDef;

use crate::openapi::{key_schema, models_of, row_schema};
use crate::shapes::{self, Kind};

/// A JSON object in insertion order (serde_json's `preserve_order`).
type Map = serde_json::Map<String, Value>;

/// An AsyncAPI 3.0 document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AsyncApi {
    asyncapi: &'static str,
    info: Info,
    default_content_type: &'static str,
    channels: Map,
    operations: Map,
    components: Components,
}

#[derive(Debug, Serialize)]
struct Info {
    title: String,
    version: String,
    description: &'static str,
}

#[derive(Debug, Serialize)]
struct Components {
    schemas: Map,
    messages: Map,
}

#[derive(Debug, Serialize)]
struct Channel {
    address: Option<String>,
    description: String,
    messages: Map,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    name: String,
    title: String,
    summary: String,
    content_type: &'static str,
    payload: Value,
}

#[derive(Debug, Serialize)]
struct Operation {
    action: &'static str,
    channel: Value,
    summary: String,
    messages: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<Value>,
}

fn to_json<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn reference(path: &str) -> Value {
    json!({ "$ref": path })
}

/// The verbs a virtual request is sent with (the socket.io event names).
const VERBS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// The AsyncAPI document of the socket side of `routes`' models.
pub fn asyncapi(routes: &[RouteInfo], title: &str, version: &str) -> Value {
    let models = models_of(routes);
    let mut schemas = Map::new();
    let mut messages = Map::new();
    let mut channels = Map::new();
    let mut operations = Map::new();

    for &model in &models {
        let name = shapes::type_name(model);
        schemas.insert(name.clone(), to_json(row_schema(model)));
    }
    schemas.insert("VirtualRequest".into(), virtual_request());
    schemas.insert("Jwr".into(), jwr());

    messages.insert(
        "virtualRequest".into(),
        to_json(Message {
            name: "virtualRequest".into(),
            title: "A virtual request".into(),
            summary: "What sails.io.js sends for io.socket.get/post/put/patch/delete: run \
                      through the same routes, policies and answers as HTTP (see the OpenAPI \
                      document)."
                .into(),
            content_type: "application/json",
            payload: reference("#/components/schemas/VirtualRequest"),
        }),
    );
    messages.insert(
        "jwr".into(),
        to_json(Message {
            name: "jwr".into(),
            title: "The answer (JWR)".into(),
            summary: "The acknowledgement of a virtual request: the HTTP answer's status, \
                      headers (ETag included) and body."
                .into(),
            content_type: "application/json",
            payload: reference("#/components/schemas/Jwr"),
        }),
    );
    channels.insert(
        "answers".into(),
        to_json(Channel {
            address: None,
            description: "The socket.io acknowledgement of each virtual request.".into(),
            messages: Map::from_iter([("jwr".to_owned(), reference("#/components/messages/jwr"))]),
        }),
    );
    for verb in VERBS {
        let channel = format!("request.{verb}");
        channels.insert(
            channel.clone(),
            to_json(Channel {
                address: Some((*verb).to_owned()),
                description: format!(
                    "The socket.io event `{verb}`: a virtual {} request.",
                    verb.to_ascii_uppercase()
                ),
                messages: Map::from_iter([(
                    "virtualRequest".to_owned(),
                    reference("#/components/messages/virtualRequest"),
                )]),
            }),
        );
        operations.insert(
            format!("receive.{verb}"),
            to_json(Operation {
                action: "receive",
                channel: reference(&format!("#/channels/{}", pointer(&channel))),
                summary: format!("Runs a virtual {} request.", verb.to_ascii_uppercase()),
                messages: vec![reference(&format!(
                    "#/channels/{}/messages/virtualRequest",
                    pointer(&channel)
                ))],
                reply: Some(json!({
                    "channel": reference("#/channels/answers"),
                    "messages": [reference("#/channels/answers/messages/jwr")],
                })),
            }),
        );
    }

    for &model in &models {
        let mut own = Map::new();
        for (verb, payload) in model_messages(model) {
            let id = format!("{}.{verb}", model.identity);
            messages.insert(
                id.clone(),
                to_json(Message {
                    name: verb.to_owned(),
                    title: format!("`{}` {verb}", model.identity),
                    summary: message_summary(model, verb),
                    content_type: "application/json",
                    payload,
                }),
            );
            own.insert(
                verb.to_owned(),
                reference(&format!("#/components/messages/{}", pointer(&id))),
            );
        }
        let verbs: Vec<String> = own.keys().cloned().collect();
        let channel = format!("model.{}", model.identity);
        channels.insert(
            channel.clone(),
            to_json(Channel {
                address: Some(model.identity.to_owned()),
                description: format!(
                    "The socket.io event `{}`: what happens to the `{}` records a socket is \
                     subscribed to (by reading them) or watches (by finding them).",
                    model.identity, model.identity
                ),
                messages: own,
            }),
        );
        operations.insert(
            format!("send.{}", model.identity),
            to_json(Operation {
                action: "send",
                channel: reference(&format!("#/channels/{}", pointer(&channel))),
                summary: format!(
                    "Publishes `{}` messages to the sockets subscribed to a record or watching \
                     the model (each recipient only what the read rules let it read).",
                    model.identity
                ),
                messages: verbs
                    .iter()
                    .map(|v| reference(&format!("#/channels/{}/messages/{v}", pointer(&channel))))
                    .collect(),
                reply: None,
            }),
        );
    }

    to_json(AsyncApi {
        asyncapi: "3.0.0",
        info: Info {
            title: title.to_owned(),
            version: version.to_owned(),
            description: "The socket side of a topsail app, for the stock sails.io.js client \
                          (socket.io): virtual requests and the models' messages. Generated \
                          from the app's models.",
        },
        default_content_type: "application/json",
        channels,
        operations,
        components: Components { schemas, messages },
    })
}

/// A name as a JSON pointer segment (`/` and `~` escaped).
fn pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn message_summary(model: &ModelDef, verb: &str) -> String {
    let m = model.identity;
    match verb {
        "created" => format!("A `{m}` record was created (to the model's watchers)."),
        "updated" => format!(
            "A `{m}` record was updated: `data` holds what changed; an update's message also \
             has `previous` (the record before, populated) and `etag` (the record's new entity \
             tag); a link changed from the other side has `data` alone."
        ),
        "destroyed" => format!("A `{m}` record was destroyed: `previous` is what it was."),
        "addedTo" => format!("A record was added to a collection of a `{m}` record."),
        "removedFrom" => format!("A record was removed from a collection of a `{m}` record."),
        _ => String::new(),
    }
}

/// Each message `model` can be sent, with its payload schema.
fn model_messages(model: &'static ModelDef) -> Vec<(&'static str, Value)> {
    let name = shapes::type_name(model);
    let row = reference(&format!("#/components/schemas/{name}"));
    let key = to_json(key_schema(model));
    let collections: Vec<&str> = shapes::fields(model)
        .iter()
        .filter(|f| matches!(f.kind, Kind::Many(_)))
        .map(|f| f.name)
        .collect();
    let verb = |v: &str| json!({"type": "string", "const": v});
    let object = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    let mut out = vec![
        (
            "created",
            object(
                json!({"verb": verb("created"), "id": key, "data": row}),
                &["verb", "id", "data"],
            ),
        ),
        (
            "updated",
            object(
                json!({
                    "verb": verb("updated"),
                    "id": key,
                    "data": {"type": "object", "description": "The values that changed (a partial record)."},
                    "previous": row,
                    "etag": {"type": "string", "description": "The record's new entity tag (the ETag a findOne of it now answers)."},
                }),
                &["verb", "id", "data"],
            ),
        ),
        (
            "destroyed",
            object(
                json!({"verb": verb("destroyed"), "id": key, "previous": row}),
                &["verb", "id", "previous"],
            ),
        ),
    ];
    if !collections.is_empty() {
        for (v, key_name) in [("addedTo", "addedId"), ("removedFrom", "removedId")] {
            let child_key = json!({"type": ["integer", "string"], "description": "The key of the record added or removed."});
            out.push((
                v,
                object(
                    json!({
                        "verb": verb(v),
                        "id": key,
                        "attribute": {"type": "string", "enum": collections},
                        key_name: child_key,
                    }),
                    &["verb", "id", "attribute", key_name],
                ),
            ));
        }
    }
    out
}

fn virtual_request() -> Value {
    json!({
        "type": "object",
        "description": "A sails.io.js virtual request (the event's first argument).",
        "properties": {
            "method": {"type": "string", "enum": ["get", "post", "put", "patch", "delete", "GET", "POST", "PUT", "PATCH", "DELETE"]},
            "url": {"type": "string", "description": "A route of the OpenAPI document, with its query string."},
            "data": {"description": "Parameters: the body of a write, query parameters of a read."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Request headers (If-Match, If-None-Match, X-CSRF-Token, ...)."},
        },
        "required": ["url"],
    })
}

fn jwr() -> Value {
    json!({
        "type": "object",
        "description": "The answer, as sails.io.js hands it to the callback (`body`, `jwr`).",
        "properties": {
            "body": {"description": "The answer's body: JSON, or text (e.g. `Not Found`)."},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "statusCode": {"type": "integer"},
        },
        "required": ["statusCode"],
    })
}
