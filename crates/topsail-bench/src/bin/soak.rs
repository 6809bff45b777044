//! `soak`: a long, bounded run of the zoo under mixed load, sampled every
//! 10 s. 1,000 sockets watch `pet` (each create fans out to all of them);
//! 100 of them also send virtual requests (reads and updates) in a closed
//! loop; one HTTP client creates pets at a fixed rate. Each sample prints
//! the server's RSS and CPU, the socket requests' p50/p99, and the fan-out's
//! delivery p99 and share delivered, so a leak or a slow drift shows as a
//! trend. A benchmark, not a test: `scripts/soak` runs it.
//!
//! Options: `--minutes N` (10), `--sockets N` (1,000), `--creates-per-sec
//! N` (20), `--database sqlite|postgres` (sqlite; postgres uses BENCH_PG).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use topsail_bench::process::{cpu_us, rss_kb, start};
use topsail_bench::{Http, OnEvent, Socket, percentile};

type Res<T> = topsail_bench::Result<T>;

static EPOCH: OnceLock<Instant> = OnceLock::new();
fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one sampling window saw.
#[derive(Default)]
struct Window {
    /// Socket request latencies (µs).
    requests: Vec<u64>,
    request_errors: u64,
    /// Create-to-delivery latencies (µs), one per socket per create.
    deliveries: Vec<u64>,
    creates: u64,
}

/// The send time of each create, by sequence (`s<seq>` is its name).
struct Sent(Mutex<Vec<u64>>);

fn on_created(sent: Arc<Sent>, window: Arc<Mutex<Window>>) -> OnEvent {
    Arc::new(move |frame: &str| {
        let Some(msg) = topsail_bench::pet_event(frame) else {
            return;
        };
        if msg.verb != "created" {
            return;
        }
        let seq = msg
            .name
            .and_then(|n| n.strip_prefix('s').and_then(|s| s.parse::<usize>().ok()));
        let at = seq.and_then(|s| sent.0.lock().ok().and_then(|v| v.get(s).copied()));
        if let Some(at) = at {
            let lat = now_us().saturating_sub(at);
            if let Ok(mut w) = window.lock() {
                w.deliveries.push(lat);
            }
        }
    })
}

#[tokio::main]
async fn main() {
    now_us();
    if let Err(e) = run().await {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Res<()> {
    let minutes: u64 = arg("--minutes", 10);
    let sockets: usize = arg("--sockets", 1000);
    let rate: f64 = arg("--creates-per-sec", 20.0);
    let database: String = arg("--database", "sqlite".to_owned());
    let busy = (sockets / 10).max(1);

    let url = match database.as_str() {
        "postgres" => {
            let admin = std::env::var("BENCH_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
            for sql in [
                "DROP DATABASE IF EXISTS topsail_soak WITH (FORCE)",
                "CREATE DATABASE topsail_soak",
            ] {
                Command::new("psql")
                    .args([format!("{admin}/postgres").as_str(), "-qc", sql])
                    .status()
                    .map_err(|e| e.to_string())?;
            }
            format!("{admin}/topsail_soak")
        }
        _ => {
            let file = std::env::temp_dir().join("topsail_soak.sqlite");
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
            format!("sqlite://{}", file.display())
        }
    };
    let zoo = start("zoo", &[("DATABASE_URL", url)]).await?;
    let pid = zoo.child.id();
    let mut http = Http::connect(&zoo.addr).await?;
    let (status, _) = http
        .send(
            "POST",
            "/user",
            Some(r#"{"name":"Soak","email":"soak@example.com"}"#),
        )
        .await?;
    if status != 200 {
        return Err(format!("seeding answered {status}"));
    }

    let sent = Arc::new(Sent(Mutex::new(Vec::new())));
    let window = Arc::new(Mutex::new(Window::default()));
    let on = on_created(sent.clone(), window.clone());
    let mut all = Vec::with_capacity(sockets);
    for chunk in (0..sockets).collect::<Vec<_>>().chunks(200) {
        let mut batch = Vec::new();
        for _ in chunk {
            let (addr, on) = (zoo.addr.clone(), on.clone());
            batch.push(tokio::spawn(
                async move { Socket::connect(&addr, on).await },
            ));
        }
        for b in batch {
            let s = b.await.map_err(|e| e.to_string())??;
            // Watches `pet` (and subscribes to at most one record).
            s.request("get", "/pet?limit=1", json!({})).await?;
            all.push(s);
        }
    }
    println!(
        "soak: {sockets} sockets watching pet, {busy} of them sending requests, {rate} creates/s ({} deliveries/s), {minutes} min on {database}",
        rate * sockets as f64
    );
    println!(
        "  t(s)   RSS MiB   CPU %   req/s   req p50 ms   req p99 ms   errors   delivered   delivery p99 ms"
    );

    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    let running = Arc::new(AtomicBool::new(true));
    // The busy sockets: reads and updates in a closed loop.
    let mut tasks = Vec::new();
    for (i, s) in all.iter().take(busy).enumerate() {
        let (s, window, running) = (s.clone(), window.clone(), running.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                let (method, url, data) = match n % 4 {
                    0 => ("get", "/user/1".to_owned(), json!({})),
                    1 => ("get", "/pet?limit=10&sort=id%20DESC".to_owned(), json!({})),
                    2 => (
                        "patch",
                        "/user/1".to_owned(),
                        json!({"age": (i as u64 + n) % 90}),
                    ),
                    _ => ("get", "/user?limit=5".to_owned(), json!({})),
                };
                n += 1;
                let t = now_us();
                let ok = s
                    .request(method, &url, data)
                    .await
                    .is_ok_and(|st| st == 200);
                if let Ok(mut w) = window.lock() {
                    w.requests.push(now_us() - t);
                    if !ok {
                        w.request_errors += 1;
                    }
                }
                // About 20 requests/s per busy socket.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // The creates, on a fixed schedule.
    let creator = {
        let (sent, window, running) = (sent.clone(), window.clone(), running.clone());
        tokio::spawn(async move {
            let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
            let mut tick = tokio::time::interval(every);
            let mut seq = 0usize;
            while running.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Ok(mut v) = sent.0.lock() {
                    v.push(now_us());
                }
                let body = format!(r#"{{"name":"s{seq}"}}"#);
                seq += 1;
                if http.send("POST", "/pet", Some(&body)).await.is_ok()
                    && let Ok(mut w) = window.lock()
                {
                    w.creates += 1;
                }
            }
        })
    };

    let started = Instant::now();
    let (mut cpu0, mut t0) = (cpu_us(pid), Instant::now());
    let mut first_rss = None;
    let mut last_rss = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let w = std::mem::take(&mut *window.lock().map_err(|e| e.to_string())?);
        let (cpu, t) = (cpu_us(pid), Instant::now());
        let cpu_pct = (cpu - cpu0) as f64 / t.duration_since(t0).as_micros() as f64 * 100.0;
        (cpu0, t0) = (cpu, t);
        let rss = rss_kb(pid);
        first_rss.get_or_insert(rss);
        last_rss = rss;
        let (mut req, mut del) = (w.requests, w.deliveries);
        req.sort_unstable();
        del.sort_unstable();
        let expected = w.creates * sockets as u64;
        println!(
            "{:>6} {:>9.1} {:>7.0} {:>7.0} {:>12.2} {:>12.2} {:>8} {:>10.1}% {:>17.2}",
            started.elapsed().as_secs(),
            rss as f64 / 1024.0,
            cpu_pct,
            req.len() as f64 / 10.0,
            percentile(&req, 0.5) as f64 / 1000.0,
            percentile(&req, 0.99) as f64 / 1000.0,
            w.request_errors,
            if expected > 0 {
                del.len() as f64 / expected as f64 * 100.0
            } else {
                0.0
            },
            percentile(&del, 0.99) as f64 / 1000.0,
        );
    }
    running.store(false, Ordering::Relaxed);
    let _ = creator.await;
    for t in tasks {
        let _ = t.await;
    }
    for s in &all {
        s.close();
    }
    println!(
        "soak: RSS {:.1} MiB at the first sample, {:.1} MiB at the last",
        first_rss.unwrap_or(0) as f64 / 1024.0,
        last_rss as f64 / 1024.0
    );
    drop(zoo);
    Ok(())
}
