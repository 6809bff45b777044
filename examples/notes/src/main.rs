//! The notes server. Configured from the environment: `PORT` (1337),
//! `HOST` (127.0.0.1), `DATABASE_URL` (`sqlite://notes.sqlite`: a file in
//! the working directory), `ALLOWED_ORIGINS` (comma-separated origins
//! whose pages may open sockets besides the app's own), `RUST_LOG`.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let host = env_or("HOST", "127.0.0.1");
    let port = env_or("PORT", "1337");
    let database_url = env_or("DATABASE_URL", example_notes::DEFAULT_DATABASE_URL);
    let realtime =
        topsail::RealtimeConfig::default().allowed_origins_from(&env_or("ALLOWED_ORIGINS", ""));
    let (app, router) = match example_notes::app(&database_url, realtime).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("notes: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(format!("{host}:{port}")).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("notes: cannot listen on {host}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = topsail::TunedListener::new(listener, topsail::DEFAULT_STALLED_AFTER);
    let router = router.into_make_service_with_connect_info::<topsail::Connection>();
    tracing::info!(url = %format!("http://{host}:{port}"), "notes listening");
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(topsail::shutdown_signal())
        .await
    {
        eprintln!("notes: server error: {e}");
        return ExitCode::FAILURE;
    }
    app.shutdown(std::time::Duration::from_secs(10)).await;
    ExitCode::SUCCESS
}
