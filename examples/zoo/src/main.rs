//! The zoo server. Configured from the environment: `PORT` (1337), `HOST`
//! (127.0.0.1), `DATABASE_URL` (`sqlite://zoo.sqlite`), `REDIS_URL` (unset:
//! a single process; set: one node of a cluster), `ALLOWED_ORIGINS`
//! (comma-separated origins whose pages may open sockets besides the zoo's
//! own), `NODE_ENV` (`production` leaves out the control routes),
//! `REPLAY_WINDOW_SECS` and `REPLAY_PER_ROOM` (how long and how much of
//! each room the replay log keeps for sockets that come back: 120 and
//! 10,000), `REPLAY=off` (no sequence numbers, no replay), `PUBSUB_LANES`
//! (workers that hand messages to the sockets: one per core; 0 hands them
//! out on the one publisher task), `PUBSUB_INTRODUCTIONS` (`at-once` or
//! `when-needed`: when watchers join the rooms of new records; unset: once
//! the node caught up), `RESUME_FILE` (a single process: where
//! it records its sockets so that, after a restart or a crash, those that
//! come back get their rooms and what they missed, journaled beside it in
//! `<file>.journal/`), `REDIS_PREFIX` (a cluster's
//! keys and channels in Redis: `topsail`), `RUST_LOG`.
//! `zoo --print-schema sqlite|postgres` prints the DDL of the models.

use std::process::ExitCode;

use topsail::core::store::Dialect;
use tracing_subscriber::EnvFilter;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// How long a shutdown waits for work in flight before closing the sockets.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--print-schema") {
        let dialect = match args.get(1).map(String::as_str) {
            Some("postgres") => Dialect::Postgres,
            Some("sqlite") | None => Dialect::Sqlite,
            Some(other) => {
                eprintln!("zoo: unknown dialect `{other}`, expected `sqlite` or `postgres`");
                return ExitCode::from(2);
            }
        };
        print!("{}", topsail::ddl(&example_zoo::registry(), dialect));
        return ExitCode::SUCCESS;
    }

    let host = env_or("HOST", "127.0.0.1");
    let port = env_or("PORT", "1337");
    let database_url = env_or("DATABASE_URL", example_zoo::DEFAULT_DATABASE_URL);

    let redis_url = std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty());
    // Pages of other origins may not open sockets, but those listed here.
    let mut realtime =
        topsail::RealtimeConfig::default().allowed_origins_from(&env_or("ALLOWED_ORIGINS", ""));
    // The soak runs with a low cap to show where the rooms stop growing.
    if let Ok(n) = env_or("MAX_ROOMS_PER_SOCKET", "").parse() {
        realtime.max_rooms_per_socket = n;
    }
    // The reconnect tests shrink the log to show what a longer gap gets.
    if let Ok(secs) = env_or("REPLAY_WINDOW_SECS", "").parse() {
        realtime.replay.window = std::time::Duration::from_secs(secs);
    }
    if let Ok(n) = env_or("REPLAY_PER_ROOM", "").parse() {
        realtime.replay.per_room = n;
    }
    // `REPLAY=off`: Sails' behaviour (no numbers, no log), to measure what
    // they cost.
    if env_or("REPLAY", "on") == "off" {
        realtime.replay.enabled = false;
    }
    if let Ok(path) = std::env::var("RESUME_FILE")
        && !path.is_empty()
    {
        realtime.replay.restart_file = Some(path.into());
    }
    // Two apps sharing one Redis database each need a prefix of their own.
    if let Ok(prefix) = std::env::var("REDIS_PREFIX")
        && !prefix.is_empty()
    {
        realtime.redis_prefix = prefix;
    }
    // The benchmarks compare the lanes with one publisher task (`0`).
    if let Ok(n) = env_or("PUBSUB_LANES", "").parse() {
        realtime.lanes = n;
    }
    // ... and introductions carried out at once with the default.
    match env_or("PUBSUB_INTRODUCTIONS", "").as_str() {
        "at-once" => realtime.introductions = topsail::Introductions::AtOnce,
        "when-needed" => realtime.introductions = topsail::Introductions::WhenNeeded,
        _ => {}
    }
    let (app, router) =
        match example_zoo::app_with(&database_url, redis_url.as_deref(), realtime).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("zoo: {e}");
                return ExitCode::FAILURE;
            }
        };
    let listener = match tokio::net::TcpListener::bind(format!("{host}:{port}")).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("zoo: cannot listen on {host}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // No Nagle delay, and a connection whose client stopped reading is
    // closed after 90 s (see `topsail::tune_tcp`); with each connection as
    // connect info, a socket whose outgoing queue overflows is cut at once
    // (see `topsail::Connection`).
    let listener = topsail::TunedListener::new(listener, topsail::DEFAULT_STALLED_AFTER);
    let router = router.into_make_service_with_connect_info::<topsail::Connection>();
    let database = database_url.split('@').next_back().unwrap_or(&database_url);
    tracing::info!(url = %format!("http://{host}:{port}"), database, cluster = redis_url.is_some(), "zoo listening");
    // On Ctrl-C or SIGTERM: stop accepting and let HTTP requests finish;
    // then socket requests and detached writes, deliver what they
    // published, disconnect the sockets cleanly, exit 0.
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(topsail::shutdown_signal())
        .await
    {
        eprintln!("zoo: server error: {e}");
        return ExitCode::FAILURE;
    }
    app.shutdown(SHUTDOWN_DEADLINE).await;
    ExitCode::SUCCESS
}
