//! `topsail-bench`: runs every benchmark scenario against the zoo (and the
//! hand-written limit), prints a table and writes JSON. See
//! docs/BENCHMARKS.md; run it with `scripts/bench`.
//!
//! Traffic stays on 127.0.0.1; every loop is bounded in count and time.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use topsail_bench::process::{Server, cpu_us, machine_ticks, rss_kb, start, start_cmd};
use topsail_bench::{Http, OnEvent, Socket, percentile};

mod reconnect;

type Res<T> = topsail_bench::Result<T>;

static EPOCH: OnceLock<Instant> = OnceLock::new();
fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Closed loop over `conns` keep-alive connections for `secs`: requests/s and
/// latency percentiles (µs).
async fn http_loop(
    server: &Server,
    conns: usize,
    secs: u64,
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
) -> Res<Value> {
    let mut tasks = Vec::new();
    let mut conns_ = Vec::new();
    for _ in 0..conns {
        conns_.push(Http::connect(&server.addr).await?);
    }
    trace_mark("closed loop: measured phase starts", server);
    let cpu0 = cpu_us(server.child.id());
    let deadline = Instant::now() + Duration::from_secs(secs);
    for mut c in conns_ {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match c.send(method, path, body).await {
                    Ok((200, _)) => lat.push(t.elapsed().as_micros() as u64),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    loop_row(server, tasks, cpu0, secs).await
}

/// With `BENCH_TRACE` set, a mark on stderr (with the server's pid), so a
/// tool outside the harness can read the server's CPU over the same phase.
fn trace_mark(what: &str, server: &Server) {
    if std::env::var_os("BENCH_TRACE").is_some() {
        eprintln!("{what} (pid {})", server.child.id());
    }
}

/// One closed-loop client's result: the latencies (µs) of the requests
/// answered 200, and how many were not.
type LoopTask = tokio::task::JoinHandle<(Vec<u64>, u64)>;

/// A closed loop's row: requests/s, latency percentiles, errors, and the
/// server's CPU per request since `cpu0`.
async fn loop_row(server: &Server, tasks: Vec<LoopTask>, cpu0: u64, secs: u64) -> Res<Value> {
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| e.to_string())?;
        all.extend(l);
        errors += e;
    }
    let cpu = cpu_us(server.child.id()) - cpu0;
    trace_mark("closed loop: measured phase ends", server);
    all.sort_unstable();
    Ok(json!({
        "rps": all.len() as f64 / secs as f64, "p50_us": percentile(&all, 0.5), "p99_us": percentile(&all, 0.99), "errors": errors,
        "server_cpu_us_per_req": cpu as f64 / all.len().max(1) as f64,
    }))
}

async fn connect_many(addr: &str, n: usize, on_event: OnEvent) -> Res<Vec<Socket>> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let mut batch = Vec::new();
        for _ in chunk {
            let addr = addr.to_owned();
            let on = on_event.clone();
            batch.push(tokio::spawn(
                async move { Socket::connect(&addr, on).await },
            ));
        }
        for b in batch {
            out.push(b.await.map_err(|e| e.to_string())??);
        }
    }
    Ok(out)
}

/// Latency recorder for fan-out events named `b<seq>`.
struct Fanout {
    sent: Vec<AtomicU64>,
    got: AtomicU64,
    lat: Mutex<Vec<u64>>,
}

impl Fanout {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Fanout {
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            got: AtomicU64::new(0),
            lat: Mutex::new(Vec::new()),
        })
    }
    fn on_event(self: &Arc<Self>) -> OnEvent {
        let me = self.clone();
        Arc::new(move |frame: &str| {
            // `["pet",{"verb":"created","data":{"name":"b17",...},"id":..}]`,
            // parsed into borrowed fields (no tree is built).
            let Some(msg) = topsail_bench::pet_event(frame) else {
                return;
            };
            if msg.verb != "created" {
                return;
            }
            let seq = msg
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix('b'))
                .and_then(|s| s.parse::<usize>().ok());
            if let Some(sent) = seq.and_then(|s| me.sent.get(s)) {
                let l = now_us().saturating_sub(sent.load(Ordering::Relaxed));
                me.got.fetch_add(1, Ordering::Relaxed);
                me.lat.lock().unwrap_or_else(|e| e.into_inner()).push(l);
            }
        })
    }
}

/// How the actor issues its creates.
#[derive(Clone, Copy)]
enum Load {
    /// 16 creates in flight, as fast as the server takes them: throughput.
    /// Latency then measures the queue (a burst of 16 creates to 10,000
    /// subscribers is 160,000 frames to write).
    Burst,
    /// Creates sent on a fixed schedule (creates per second), whatever the
    /// answers: latency at a load the server sustains.
    Paced(f64),
}

/// Creates in flight at once in the fan-out, whatever the load.
const IN_FLIGHT: usize = 16;

/// Runs of each side of the rule benchmark (scenario 6).
const RULE_RUNS: usize = 5;

/// Scenario 1 on one server: `subs` watchers (spread over `subs_at`), `n`
/// creates sent to `server` (`/emit` for the raw-socketioxide `limit`).
async fn fanout(
    server: &Server,
    subs_at: &[&Server],
    subs: usize,
    n: usize,
    limit: bool,
    load: Load,
) -> Res<Value> {
    let f = Fanout::new(n);
    let mut sockets = Vec::new();
    for (i, s) in subs_at.iter().enumerate() {
        let share = subs / subs_at.len() + usize::from(i < subs % subs_at.len());
        sockets.extend(connect_many(&s.addr, share, f.on_event()).await?);
    }
    if !limit {
        let mut watch = Vec::new();
        for s in &sockets {
            let s = s.clone();
            watch.push(tokio::spawn(async move {
                s.request("get", "/pet?limit=1", json!({})).await
            }));
        }
        for w in watch {
            let status = w.await.map_err(|e| e.to_string())??;
            if status != 200 {
                return Err(format!("GET /pet?limit=1 answered {status}"));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    if std::env::var_os("BENCH_TRACE").is_some() {
        // A mark to profile the measured phase alone (`perf record -p`).
        eprintln!("fan-out: creates start (pid {})", server.child.id());
    }
    let cpu0 = subs_at.iter().map(|s| cpu_us(s.child.id())).sum::<u64>();
    let (own0, machine0) = (cpu_us(std::process::id()), machine_ticks());
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    let rate = match load {
        Load::Burst => None,
        Load::Paced(rate) => Some(rate),
    };
    for _ in 0..IN_FLIGHT {
        let (next, f, addr) = (next.clone(), f.clone(), server.addr.clone());
        workers.push(tokio::spawn(async move {
            let mut c = Http::connect(&addr).await?;
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed) as usize;
                if seq >= n {
                    return Ok::<_, String>(());
                }
                if let Some(rate) = rate {
                    let at = start + Duration::from_secs_f64(seq as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                f.sent[seq].store(now_us(), Ordering::Relaxed);
                let name = format!("b{seq}");
                if limit {
                    let body = json!({"verb": "created", "data": {"id": seq, "name": name, "species": "", "owner": null, "tags": [], "createdAt": 0, "updatedAt": 0}, "id": seq}).to_string();
                    c.send("POST", "/emit", Some(&body)).await?;
                } else {
                    c.send("POST", "/pet", Some(&json!({"name": name}).to_string())).await?;
                }
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    let create_secs = start.elapsed().as_secs_f64();
    let expected = (subs * n) as u64;
    let wait = Instant::now();
    while f.got.load(Ordering::Relaxed) < expected && wait.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_secs = start.elapsed().as_secs_f64();
    let cpu = subs_at.iter().map(|s| cpu_us(s.child.id())).sum::<u64>() - cpu0;
    let own = cpu_us(std::process::id()).saturating_sub(own0);
    let machine = machine_ticks();
    let steal = machine.1.saturating_sub(machine0.1) as f64
        / machine.0.saturating_sub(machine0.0).max(1) as f64;
    if std::env::var_os("BENCH_TRACE").is_some() {
        eprintln!("fan-out: measured phase ends (pid {})", server.child.id());
    }
    for s in &sockets {
        s.close();
    }
    let got = f.got.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *f.lat.lock().unwrap_or_else(|e| e.into_inner()));
    lat.sort_unstable();
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(json!({
        "load": match load { Load::Burst => format!("{IN_FLIGHT} in flight"), Load::Paced(r) => format!("{r} creates/s") },
        "subscribers": subs, "creates": n, "creates_per_s": n as f64 / create_secs,
        "delivered": got, "expected": expected, "missing": expected.saturating_sub(got),
        "events_per_s": got as f64 / all_secs, "p50_ms": percentile(&lat, 0.5) as f64 / 1000.0, "p99_ms": percentile(&lat, 0.99) as f64 / 1000.0,
        "server_cpu_us_per_event": if got > 0 { cpu as f64 / got as f64 } else { 0.0 },
        // What else shared the machine: the harness's own reading, and the
        // share of the cores' time the hypervisor gave another guest.
        "client_cpu_us_per_event": if got > 0 { own as f64 / got as f64 } else { 0.0 },
        "steal_pct": 100.0 * steal,
    }))
}

/// Scenario 2: `k` sockets in a closed loop on `GET /user/1`.
async fn socket_loop(server: &Server, k: usize, secs: u64) -> Res<Value> {
    let sockets = connect_many(&server.addr, k, Arc::new(|_: &str| {})).await?;
    trace_mark("closed loop: measured phase starts", server);
    let cpu0 = cpu_us(server.child.id());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for s in sockets.clone() {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match s.request("get", "/user/1", json!({})).await {
                    Ok(200) => lat.push(t.elapsed().as_micros() as u64),
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let row = loop_row(server, tasks, cpu0, secs).await;
    for s in &sockets {
        s.close();
    }
    row
}

/// Scenario 3's routes: `(result key, method, path, body)`.
const HTTP_ROUTES: [(&str, &str, &str, Option<&str>); 2] = [
    ("http_find", "GET", "/pet?limit=30&sort=name%20ASC", None),
    (
        "http_create",
        "POST",
        "/pet",
        Some(r#"{"name":"Bench","species":"cat"}"#),
    ),
];

/// Server CPU per delivered event, topsail over the limit.
/// Rounds of each side of a burst fan-out comparison, alternating, without
/// `--quick` (`--rounds N` sets it): one burst's p99 on a 2-core machine
/// moves by a third from run to run of the same server, so a comparison
/// of two single runs says as much about the machine as about the code.
const FANOUT_ROUNDS: usize = 3;

/// The median of each figure over `rounds` (each a [`fanout`] row), with
/// the rounds themselves under `"rounds"`. Figures from different rounds
/// may meet in it: the medians are each figure's, not one round's. Each
/// is the round's own value, so a count stays an integer.
fn medians(rounds: &[Value]) -> Value {
    let Some(Value::Object(first)) = rounds.first() else {
        return Value::Null;
    };
    let mut row = serde_json::Map::new();
    for (key, v) in first {
        if v.is_number() {
            let mut all: Vec<(f64, &Value)> = rounds
                .iter()
                .filter_map(|r| Some((r[key].as_f64()?, &r[key])))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            row.insert(key.clone(), all[all.len() / 2].1.clone());
        } else {
            row.insert(key.clone(), v.clone());
        }
    }
    if rounds.len() > 1 {
        row.insert("rounds".into(), Value::Array(rounds.to_vec()));
    }
    Value::Object(row)
}

/// Each round's `key` on `ours` over the same round's on `theirs`.
fn round_ratios(ours: &[Value], theirs: &[Value], key: &str) -> Vec<f64> {
    let figure = |v: &Value| v[key].as_f64().unwrap_or(0.0);
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| figure(a) / figure(b).max(0.001))
        .collect()
}

fn cpu_ratio(topsail: &Value, limit: &Value) -> f64 {
    let per_event = |v: &Value| v["server_cpu_us_per_event"].as_f64();
    per_event(topsail).unwrap_or(0.0) / per_event(limit).unwrap_or(1.0).max(0.001)
}

/// Scenario 3 on `zoo` and on `limit` (which serves exactly the zoo's
/// default `find` on `/pet`), a row per route into `results`.
async fn http_vs_limit(
    zoo: &Server,
    limit: &Server,
    secs: u64,
    label: &str,
    results: &mut serde_json::Map<String, Value>,
) -> Res<()> {
    for (name, method, path, body) in HTTP_ROUTES {
        let t = http_loop(zoo, 16, secs, method, path, body).await?;
        let l = http_loop(limit, 16, secs, method, "/pet", body).await?;
        let ratio = t["rps"].as_f64().unwrap_or(0.0) / l["rps"].as_f64().unwrap_or(1.0);
        let row = json!({"topsail": t, "limit": l, "ratio": ratio});
        print_row(&format!("{label}3. {method} {path}"), &row);
        results.insert(name.into(), row);
    }
    Ok(())
}

/// Scenario 2: `GET /user/1` over 32 sockets, then over 32 HTTP connections.
async fn socket_vs_http(server: &Server, secs: u64) -> Res<Value> {
    let s = socket_loop(server, 32, secs).await?;
    let h = http_loop(server, 32, secs, "GET", "/user/1", None).await?;
    let ratio = s["rps"].as_f64().unwrap_or(0.0) / h["rps"].as_f64().unwrap_or(1.0);
    Ok(json!({"socket": s, "http": h, "ratio": ratio}))
}

async fn seed(addr: &str) -> Res<()> {
    let mut c = Http::connect(addr).await?;
    for i in 0..10 {
        c.send(
            "POST",
            "/user",
            Some(
                &json!({"name": format!("User {i}"), "email": format!("u{i}@example.com")})
                    .to_string(),
            ),
        )
        .await?;
    }
    for i in 0..5 {
        c.send(
            "POST",
            "/tag",
            Some(&json!({"label": format!("tag{i}")}).to_string()),
        )
        .await?;
    }
    for i in 0..100 {
        let (s, body) = c
            .send(
                "POST",
                "/pet",
                Some(&json!({"name": format!("Pet {i:03}"), "owner": i % 10 + 1}).to_string()),
            )
            .await?;
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_i64())
            .ok_or(format!("seed failed: {s}"))?;
        c.send("PUT", &format!("/pet/{id}/tags/{}", i % 5 + 1), None)
            .await?;
    }
    Ok(())
}

fn print_row(label: &str, v: &Value) {
    println!("{label:<58} {v}");
}

// The load generator shares the 2 cores with the server: mimalloc makes its
// own per-frame allocations cheaper, leaving more CPU to the server. The
// servers measured (the zoo and the limit) keep the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    now_us();
    if let Err(e) = run().await {
        eprintln!("topsail-bench: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let secs = if quick { 2 } else { 5 };
    // `--only http,socket,fanout,rules,memory,cluster,replay,avalanche,recall`
    // runs a subset.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_owned).collect());
    let runs = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    // `--subscribers 10000` runs only that fan-out size (to profile it).
    let subscribers: Option<usize> = args
        .iter()
        .position(|a| a == "--subscribers")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    // `--rounds N`: rounds of each burst fan-out (topsail, raw
    // socketioxide and Sails), compared by their medians.
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if quick { 1 } else { FANOUT_ROUNDS })
        .max(1);
    let pg_admin =
        std::env::var("BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let db = "topsail_bench";
    let psql = |sql: &str| {
        Command::new("psql")
            .args([format!("{pg_admin}/postgres").as_str(), "-qc", sql])
            .status()
            .map_err(|e| e.to_string())
    };
    // `--sqlite`: every scenario on a SQLite file, with no other service
    // (no PostgreSQL, Redis or Node): for a machine with only the binaries.
    let sqlite_only = args.iter().any(|a| a == "--sqlite");
    let main_file =
        std::env::temp_dir().join(format!("topsail-bench-main-{}.sqlite", std::process::id()));
    let url = if sqlite_only {
        let _ = std::fs::remove_file(&main_file);
        format!("sqlite://{}", main_file.display())
    } else {
        psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
        psql(&format!("CREATE DATABASE {db}"))?;
        format!("{pg_admin}/{db}")
    };
    let zoo = start("zoo", &[("DATABASE_URL", url.clone())]).await?;
    seed(&zoo.addr).await?;
    let limit = start("limit", &[("DATABASE_URL", url.clone())]).await?;
    let mut results = serde_json::Map::new();
    println!(
        "topsail benchmarks ({}; client and server on this machine){}",
        if sqlite_only {
            "SQLite only"
        } else {
            "PostgreSQL, then SQLite"
        },
        if quick { ", quick" } else { "" }
    );

    if runs("http") {
        // Scenario 3: HTTP.
        http_vs_limit(&zoo, &limit, secs, "", &mut results).await?;
    }

    if runs("socket") {
        // Scenario 2: socket requests versus HTTP on the same route.
        let row = socket_vs_http(&zoo, secs).await?;
        print_row("2. GET /user/1 socket vs HTTP (32 clients)", &row);
        results.insert("socket_get".into(), row);
    }

    if runs("fanout") {
        // Scenario 1: fan-out, topsail then raw socketioxide.
        let sizes: &[(usize, usize)] = if quick {
            &[(200, 100), (2000, 20)]
        } else {
            &[(200, 500), (2000, 100), (10_000, 20)]
        };
        let mut fan = Vec::new();
        for &(subs, n) in sizes {
            if subscribers.is_some_and(|only| only != subs) {
                continue;
            }
            // Bursts: topsail and raw socketioxide in alternating rounds
            // (the machine's drift falls on both), compared by medians.
            let (mut ours, mut raw) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                ours.push(fanout(&zoo, &[&zoo], subs, n, false, Load::Burst).await?);
                raw.push(fanout(&limit, &[&limit], subs, n, true, Load::Burst).await?);
            }
            let (t, l) = (medians(&ours), medians(&raw));
            if rounds > 1 {
                println!(
                    "   {subs} x {n} burst p99 / raw's, round by round: {:.2?}",
                    round_ratios(&ours, &raw, "p99_ms")
                );
            }
            // The same sizes at 100,000 events/s offered (creates on a
            // schedule): the latency a subscriber sees under steady load.
            let rate = 100_000.0 / subs as f64;
            let tp = fanout(&zoo, &[&zoo], subs, n, false, Load::Paced(rate)).await?;
            let lp = fanout(&limit, &[&limit], subs, n, true, Load::Paced(rate)).await?;
            let ratio = cpu_ratio(&t, &l);
            let row = json!({"topsail": t, "limit": l, "cpu_ratio": ratio, "paced": {"topsail": tp, "limit": lp}});
            print_row(
                &format!("1. fan-out {subs} subscribers x {n} creates"),
                &row,
            );
            fan.push(row);
        }
        results.insert("fanout".into(), Value::Array(fan));
    }

    if runs("rules") {
        // What a read rule costs: the same fan-out on the zoo and on the
        // zoo with a rule checked for every recipient, five times each,
        // alternating (the machine's noise falls on both), compared by
        // their medians. Single runs on a 2-core machine spread by a third
        // for the same server, as much as the rule costs, so three runs
        // each let one slow run move a median.
        let ruled = start("zoo-ruled", &[("DATABASE_URL", url.clone())]).await?;
        let (subs, n) = if quick { (2000, 20) } else { (10_000, 20) };
        let mut plain = Vec::new();
        let mut checked = Vec::new();
        for _ in 0..RULE_RUNS {
            plain.push(fanout(&zoo, &[&zoo], subs, n, false, Load::Burst).await?);
            checked.push(fanout(&ruled, &[&ruled], subs, n, false, Load::Burst).await?);
        }
        let median = |rows: &[Value], key: &str| {
            let mut v: Vec<f64> = rows.iter().filter_map(|r| r[key].as_f64()).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let row = json!({
            "subscribers": subs, "creates": n,
            "plain": plain, "rule": checked,
            "events_per_s_ratio": median(&plain, "events_per_s") / median(&checked, "events_per_s").max(0.001),
            "p99_ratio": median(&checked, "p99_ms") / median(&plain, "p99_ms").max(0.001),
            "cpu_per_event_ratio": median(&checked, "server_cpu_us_per_event") / median(&plain, "server_cpu_us_per_event").max(0.001),
        });
        for (label, r) in [("plain", &plain), ("rule", &checked)] {
            for (i, run) in r.iter().enumerate() {
                print_row(
                    &format!("6. fan-out {subs} x {n}, {label} (run {})", i + 1),
                    run,
                );
            }
        }
        println!(
            "   a read rule per recipient costs: {:.2}x events/s, {:.2}x p99, {:.2}x CPU per event (medians of {RULE_RUNS} each)",
            row["events_per_s_ratio"].as_f64().unwrap_or(0.0),
            row["p99_ratio"].as_f64().unwrap_or(0.0),
            row["cpu_per_event_ratio"].as_f64().unwrap_or(0.0)
        );
        results.insert("rules".into(), row);
        drop(ruled);
    }

    if runs("replay") {
        // A socket that dropped is given back 300 messages it missed.
        let rounds = if quick { 10 } else { 30 };
        let row = reconnect::replay(&zoo, 300, rounds).await?;
        print_row(
            &format!("7. replay of 300 missed messages to one socket ({rounds} rounds)"),
            &row,
        );
        results.insert("replay".into(), row);
    }

    if runs("avalanche") {
        // Every subscribed socket dropped at once while changes go on, all
        // coming back by themselves (fresh process: its memory is the
        // avalanche's).
        let (subs, secs) = if quick { (2000, 6.0) } else { (10_000, 10.0) };
        let fresh = start("zoo", &[("DATABASE_URL", url.clone())]).await?;
        let row = reconnect::avalanche(&fresh, subs, 100.0, secs, 3.0).await?;
        print_row(
            &format!("8. reconnect avalanche, {subs} sockets, 100 creates/s"),
            &row,
        );
        results.insert("avalanche".into(), row);
        drop(fresh);
    }

    if runs("memory") {
        // Scenario 4: idle sockets, on a fresh process (one that served the
        // fan-out keeps the memory it grew, which would hide the cost).
        let idle = if quick { 2000 } else { 10_000 };
        let fresh = start("zoo", &[("DATABASE_URL", url.clone())]).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = rss_kb(fresh.child.id());
        let sockets = connect_many(&fresh.addr, idle, Arc::new(|_: &str| {})).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = rss_kb(fresh.child.id());
        let row = json!({"sockets": idle, "rss_before_kb": before, "rss_after_kb": after, "bytes_per_socket": (after.saturating_sub(before) * 1024) / idle as u64});
        print_row(&format!("4. memory, {idle} idle sockets"), &row);
        results.insert("memory".into(), row);
        for s in &sockets {
            s.close();
        }
        drop(sockets);
        drop(fresh);
    }

    if runs("cluster") {
        // Scenario 5: the fan-out over two nodes sharing Redis.
        let (redis, redis_url) = topsail_bench::process::redis().await?;
        let n1 = start(
            "zoo",
            &[
                ("DATABASE_URL", url.clone()),
                ("REDIS_URL", redis_url.clone()),
            ],
        )
        .await?;
        let n2 = start(
            "zoo",
            &[("DATABASE_URL", url.clone()), ("REDIS_URL", redis_url)],
        )
        .await?;
        let (subs, n) = if quick { (400, 50) } else { (2000, 100) };
        let row = fanout(&n1, &[&n1, &n2], subs, n, false, Load::Burst).await?;
        print_row(
            &format!("5. cluster fan-out, {subs} subscribers on 2 nodes x {n} creates"),
            &row,
        );
        results.insert("cluster_fanout".into(), row);
        drop((n1, n2, redis));
    }

    if runs("recall") {
        // A node that starts in a cluster reads the replay window back from
        // the Redis stream before it serves.
        let creates = if quick { 10_000 } else { 100_000 };
        let row = reconnect::recall(&url, creates).await?;
        print_row(
            &format!("9. a node starting after {creates} actions in the stream"),
            &row,
        );
        results.insert("recall".into(), row);
    }

    // `--sails`: the reference, Sails 1.5.18 with sails-postgresql on a
    // fresh database, through the same client: scenarios 3, 2 and the
    // 200 x 500 fan-out (the issue's reference configuration), then ratios
    // to the topsail rows of this run.
    if args.iter().any(|a| a == "--sails") {
        let sails_db = "topsail_bench_sails";
        psql(&format!("DROP DATABASE IF EXISTS {sails_db} WITH (FORCE)"))?;
        psql(&format!("CREATE DATABASE {sails_db}"))?;
        let dir = std::env::var("BENCH_SAILS_DIR")
            .unwrap_or_else(|_| "crates/topsail-bench/sails".into());
        let mut cmd = Command::new("node");
        cmd.arg(format!("{dir}/zoo.js"));
        let sails = start_cmd(
            "sails",
            cmd,
            &[("DATABASE_URL", format!("{pg_admin}/{sails_db}"))],
        )
        .await?;
        seed(&sails.addr).await?;
        let mut row = serde_json::Map::new();
        for (name, method, path, body) in HTTP_ROUTES {
            let t = http_loop(&sails, 16, secs, method, path, body).await?;
            print_row(&format!("Sails 3. {method} {path}"), &t);
            row.insert(name.into(), t);
        }
        let t = socket_loop(&sails, 32, secs).await?;
        print_row("Sails 2. GET /user/1 over sockets (32 clients)", &t);
        row.insert("socket_get".into(), t);
        let (subs, n) = if quick { (200, 100) } else { (200, 500) };
        let mut theirs = Vec::new();
        for _ in 0..rounds {
            theirs.push(fanout(&sails, &[&sails], subs, n, false, Load::Burst).await?);
        }
        let t = medians(&theirs);
        print_row(
            &format!("Sails 1. fan-out {subs} subscribers x {n} creates"),
            &t,
        );
        row.insert("fanout".into(), t);
        row.insert("rss_kb".into(), json!(rss_kb(sails.child.id())));
        // topsail / Sails, for the figures this run has on both.
        let rps = |v: &Value| v["rps"].as_f64();
        let mut ratios = serde_json::Map::new();
        for (name, ours) in [
            ("http_find", results.get("http_find").map(|r| &r["topsail"])),
            (
                "http_create",
                results.get("http_create").map(|r| &r["topsail"]),
            ),
            (
                "socket_get",
                results.get("socket_get").map(|r| &r["socket"]),
            ),
        ] {
            if let (Some(a), Some(b)) = (ours.and_then(rps), rps(&row[name])) {
                ratios.insert(name.into(), json!(a / b.max(0.001)));
            }
        }
        let ours = results
            .get("fanout")
            .and_then(|f| f.get(0))
            .map(|f| &f["topsail"]);
        if let Some(ours) = ours.filter(|o| o["subscribers"] == json!(subs)) {
            let t = &row["fanout"];
            let ev = |v: &Value| v["events_per_s"].as_f64().unwrap_or(0.0);
            let p99 = |v: &Value| v["p99_ms"].as_f64().unwrap_or(0.0);
            ratios.insert("fanout_events".into(), json!(ev(ours) / ev(t).max(0.001)));
            ratios.insert("fanout_p99".into(), json!(p99(ours) / p99(t).max(0.001)));
            if let Some(each) = ours["rounds"].as_array() {
                let each = round_ratios(each, &theirs, "p99_ms");
                ratios.insert("fanout_p99_rounds".into(), json!(each));
            }
        }
        print_row("topsail / Sails", &Value::Object(ratios.clone()));
        row.insert("topsail_over_sails".into(), Value::Object(ratios));
        results.insert("sails".into(), Value::Object(row));
        drop(sails);
    }

    // The embedded default: scenarios 3, 2 and the small fan-out on SQLite
    // (a fresh file), the limit over the same file.
    if runs("sqlite") {
        drop(limit);
        let file =
            std::env::temp_dir().join(format!("topsail-bench-{}.sqlite", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let url = format!("sqlite://{}", file.display());
        let zoo = start("zoo", &[("DATABASE_URL", url.clone())]).await?;
        seed(&zoo.addr).await?;
        let limit = start("limit", &[("DATABASE_URL", url)]).await?;
        let mut sqlite = serde_json::Map::new();
        http_vs_limit(&zoo, &limit, secs, "SQLite ", &mut sqlite).await?;
        let row = socket_vs_http(&zoo, secs).await?;
        print_row("SQLite 2. GET /user/1 socket vs HTTP (32 clients)", &row);
        sqlite.insert("socket_get".into(), row);
        let (subs, n) = if quick { (200, 100) } else { (200, 500) };
        let t = fanout(&zoo, &[&zoo], subs, n, false, Load::Burst).await?;
        let l = fanout(&limit, &[&limit], subs, n, true, Load::Burst).await?;
        let ratio = cpu_ratio(&t, &l);
        let row = json!({"topsail": t, "limit": l, "cpu_ratio": ratio});
        print_row(
            &format!("SQLite 1. fan-out {subs} subscribers x {n} creates"),
            &row,
        );
        sqlite.insert("fanout".into(), row);
        results.insert("sqlite".into(), Value::Object(sqlite));
        drop((zoo, limit));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }

    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/results.json".into());
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&Value::Object(results)).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    println!("results written to {out}");
    if sqlite_only {
        drop(zoo);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", main_file.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::medians;

    #[test]
    fn medians_take_each_figures_middle_round_and_keep_counts_integers() {
        let rounds = [
            json!({"subscribers": 200, "p99_ms": 30.5, "load": "burst"}),
            json!({"subscribers": 200, "p99_ms": 12.0, "load": "burst"}),
            json!({"subscribers": 200, "p99_ms": 21.25, "load": "burst"}),
        ];
        let row = medians(&rounds);
        // Compared with `==` by the Sails ratio: 200, not 200.0.
        assert_eq!(row["subscribers"], json!(200));
        assert_eq!(row["p99_ms"], json!(21.25));
        assert_eq!(row["load"], json!("burst"));
        assert_eq!(row["rounds"].as_array().map(Vec::len), Some(3));
    }
}
