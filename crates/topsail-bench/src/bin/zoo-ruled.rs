//! The zoo with a read rule on `pet`, for the benchmark of what a rule
//! costs: every published pet message is then checked per recipient. The
//! rule admits the pets the benchmark creates (species ""), so the same
//! messages reach the same sockets as on the plain zoo, and the difference
//! is the check alone: each recipient (each a principal of its own) has
//! the rule's condition evaluated against the record.
//!
//! Configured like the zoo: `PORT`, `DATABASE_URL`.

use axum::http::request::Parts;
use topsail::{Access, Identify, Principal, Rules};

/// Every socket a principal of its own (an account id made from its socket
/// id), so the rule runs for each recipient, as it would with ten thousand
/// signed-in users; HTTP requests are anonymous.
struct PerSocket;

#[topsail::async_trait]
impl Identify for PerSocket {
    async fn identify(&self, parts: &mut Parts) -> Principal {
        use std::hash::{Hash, Hasher};
        let Some(socket) = parts
            .extensions
            .get::<topsail::Actor>()
            .and_then(|a| a.socket_id().cloned())
        else {
            return Principal::anonymous();
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        socket.hash(&mut h);
        Principal::new((h.finish() >> 1) as i64)
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
        .layer(app.identity(PerSocket));
    let router = app.serve(routes);
    // As the zoo's listener.
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let listener = topsail::TunedListener::new(listener, topsail::DEFAULT_STALLED_AFTER);
    let router = router.into_make_service_with_connect_info::<topsail::Connection>();
    axum::serve(listener, router).await?;
    Ok(())
}
