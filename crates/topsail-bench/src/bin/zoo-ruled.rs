//! The zoo with a read rule on `pet`, for the benchmark of what a rule
//! costs: every published pet message is then checked per recipient. The
//! rule admits the pets the benchmark creates (species ""), so the same
//! messages reach the same sockets as on the plain zoo, and the difference
//! is the check alone: the rule's closure called for each recipient's
//! principal and its condition evaluated against the record.
//!
//! Configured like the zoo: `PORT`, `DATABASE_URL`.

use axum::http::request::Parts;
use axum::serve::ListenerExt;
use topsail::{Access, Identify, Principal, Rules};

/// An account id from an `x-account` header; the benchmark's sockets send
/// none and are anonymous.
struct ByHeader;

#[topsail::async_trait]
impl Identify for ByHeader {
    async fn identify(&self, parts: &mut Parts) -> Principal {
        parts
            .headers
            .get("x-account")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .map_or_else(Principal::anonymous, Principal::new)
    }
}

/// Mine, or of a public species.
fn rules() -> Rules {
    Rules::new().read::<example_zoo::Pet>(|p| {
        let public = Access::one_of("species", ["", "cat", "dog"]);
        match p.get::<i64>() {
            Some(id) => Access::eq("owner", *id).or(public),
            None => public,
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Same runtime and allocator as the zoo's binary: only the rule differs.
    let port = std::env::var("PORT").unwrap_or_else(|_| "1337".into());
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| example_zoo::DEFAULT_DATABASE_URL.to_owned());
    let app = example_zoo::builder()
        .database_url(url)
        .rules(rules())
        .realtime(topsail::RealtimeConfig::default())
        .build()
        .await?;
    let routes = app
        .blueprints()
        .mount(example_zoo::routes(&app))
        .layer(app.identity(ByHeader));
    let router = app.serve(routes);
    // As the zoo's listener: no Nagle delay.
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await?
        .tap_io(|tcp| topsail::tune_tcp(tcp, topsail::DEFAULT_STALLED_AFTER));
    axum::serve(listener, router).await?;
    Ok(())
}
