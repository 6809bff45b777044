//! The reconnect scenarios: one socket given back 300 messages it missed,
//! and an avalanche of subscribed sockets dropped at once while changes go
//! on, all coming back with their resume keys (the `topsail.rid` cookie a
//! browser keeps). Both run on any database, SQLite with no other service
//! included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use topsail_bench::process::{Server, cpu_us, rss_kb, start};
use topsail_bench::{Handshake, Http, OnEvent, Socket, percentile};

use crate::Res;

/// A node that starts in a cluster after `creates` actions, each an entry
/// of the Redis stream: how long it takes to read them back into its log
/// before it serves (from its start until it accepts), its CPU and memory
/// then, against a node started on an empty stream.
pub(crate) async fn recall(url: &str, creates: usize) -> Res<Value> {
    let (redis, redis_url) = topsail_bench::process::redis().await?;
    let env = [("DATABASE_URL", url.to_owned()), ("REDIS_URL", redis_url)];
    let began = Instant::now();
    let first = start("zoo", &env).await?;
    let empty_ms = began.elapsed().as_secs_f64() * 1e3;
    let (first_cpu, first_rss) = (cpu_us(first.child.id()), rss_kb(first.child.id()));
    let names: Arc<Vec<String>> = Arc::new((0..creates).map(|i| format!("recall-{i}")).collect());
    let fill = Instant::now();
    create_pets(&first.addr, names, 16, None).await?;
    let fill_secs = fill.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let entries = stream_length(&redis.addr)?;
    let began = Instant::now();
    let second = start("zoo", &env).await?;
    let full_ms = began.elapsed().as_secs_f64() * 1e3;
    let (cpu, rss) = (cpu_us(second.child.id()), rss_kb(second.child.id()));
    drop((first, second, redis));
    Ok(json!({
        "actions": creates,
        "fill_s": (fill_secs * 10.0).round() / 10.0,
        "stream_entries": entries,
        "start_empty_ms": empty_ms.round(),
        "start_full_ms": full_ms.round(),
        "cpu_empty_ms": first_cpu / 1000,
        "cpu_full_ms": cpu / 1000,
        "rss_empty_mb": first_rss / 1024,
        "rss_full_mb": rss / 1024,
    }))
}

/// How many entries the effects stream of the Redis at `addr` holds.
fn stream_length(addr: &str) -> Res<u64> {
    let port = addr.rsplit(':').next().unwrap_or_default();
    let out = std::process::Command::new("redis-cli")
        .args(["-p", port, "XLEN", "topsail:effects"])
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("XLEN: {e}"))
}

/// A resume key per socket, unique to this run.
fn key(tag: &str, i: usize) -> Handshake {
    Handshake {
        cookie: Some(format!(
            "topsail.rid=bench-{}-{tag}-{i}",
            std::process::id()
        )),
        query: String::new(),
    }
}

/// Creates `names` over `conns` keep-alive connections, as fast as they
/// are answered, or at `rate` creates/s from `start`.
async fn create_pets(
    addr: &str,
    names: Arc<Vec<String>>,
    conns: usize,
    rate: Option<(f64, Instant)>,
) -> Res<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..conns {
        let (next, names, addr) = (next.clone(), names.clone(), addr.to_owned());
        workers.push(tokio::spawn(async move {
            let mut c = Http::connect(&addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(name) = names.get(i) else {
                    return Ok::<_, String>(());
                };
                if let Some((rate, start)) = rate {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                let (status, _) = c
                    .send("POST", "/pet", Some(&json!({ "name": name }).to_string()))
                    .await?;
                if status != 201 && status != 200 {
                    return Err(format!("POST /pet answered {status}"));
                }
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// A socket that watches pets (`GET /pet?limit=1`).
async fn watching(addr: &str, on: OnEvent, hs: &Handshake) -> Res<Socket> {
    let s = Socket::connect_with(addr, on, hs).await?;
    match s.request("get", "/pet?limit=1", json!({})).await? {
        200 => Ok(s),
        status => Err(format!("GET /pet?limit=1 answered {status}")),
    }
}

/// One socket drops, `messages` pets are created meanwhile, and it comes
/// back (the stock client's claim: its cookie): the time from the start of
/// its handshake to the last of them, over `rounds` rounds.
pub(crate) async fn replay(server: &Server, messages: usize, rounds: usize) -> Res<Value> {
    let mut lat = Vec::new();
    for round in 0..rounds {
        let hs = key("replay", round);
        let s = watching(&server.addr, Arc::new(|_: &str| {}), &hs).await?;
        s.drop_connection();
        // Its disconnect is seen, and it is parked.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let prefix = format!("r{round}-");
        let names: Vec<String> = (0..messages).map(|i| format!("{prefix}{i}")).collect();
        create_pets(&server.addr, Arc::new(names), 4, None).await?;
        let got = Arc::new(AtomicUsize::new(0));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let done_tx = std::sync::Mutex::new(Some(done_tx));
        let counter = got.clone();
        let on: OnEvent = Arc::new(move |frame: &str| {
            let Some(e) = topsail_bench::pet_event(frame) else {
                return;
            };
            if e.verb == "created"
                && e.name.as_deref().is_some_and(|n| n.starts_with(&prefix))
                && counter.fetch_add(1, Ordering::Relaxed) + 1 == messages
                && let Some(tx) = done_tx.lock().ok().and_then(|mut t| t.take())
            {
                let _ = tx.send(());
            }
        });
        let t0 = Instant::now();
        let back = Socket::connect_with(&server.addr, on, &hs).await?;
        tokio::time::timeout(Duration::from_secs(10), done_rx)
            .await
            .map_err(|_| {
                format!(
                    "round {round}: {} of {messages} replayed",
                    got.load(Ordering::Relaxed)
                )
            })?
            .map_err(|e| e.to_string())?;
        lat.push(t0.elapsed().as_micros() as u64);
        back.close();
    }
    lat.sort_unstable();
    let ms = |p: f64| percentile(&lat, p) as f64 / 1000.0;
    Ok(json!({
        "messages": messages, "rounds": rounds,
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0),
    }))
}

/// The server's own count of resumes, by outcome, and of messages
/// replayed, from its `/metrics`.
async fn resume_counts(addr: &str) -> Value {
    let Ok(mut c) = Http::connect(addr).await else {
        return Value::Null;
    };
    let Ok((200, body)) = c.send("GET", "/metrics", None).await else {
        return Value::Null;
    };
    let text = String::from_utf8_lossy(&body);
    let mut out = serde_json::Map::new();
    for line in text.lines() {
        let counted = [
            "topsail_resumes_total",
            "topsail_replayed_messages_total",
            "topsail_messages_missed_total",
            "topsail_slow_consumer_disconnects_total",
        ]
        .iter()
        .any(|name| line.starts_with(name));
        if let (true, Some((name, n))) = (counted, line.rsplit_once(' ')) {
            out.insert(name.to_owned(), json!(n.parse::<f64>().unwrap_or(0.0)));
        }
    }
    Value::Object(out)
}

/// Which creates (by number) each socket has received, across its
/// connections.
struct Seen {
    words: usize,
    bits: Vec<AtomicU64>,
    got: AtomicU64,
}

impl Seen {
    fn new(sockets: usize, creates: usize) -> Arc<Self> {
        let words = creates.div_ceil(64);
        Arc::new(Seen {
            words,
            bits: (0..sockets * words).map(|_| AtomicU64::new(0)).collect(),
            got: AtomicU64::new(0),
        })
    }

    fn on_event(self: &Arc<Self>, socket: usize) -> OnEvent {
        let me = self.clone();
        Arc::new(move |frame: &str| {
            let Some(e) = topsail_bench::pet_event(frame) else {
                return;
            };
            let n = e
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix('a'))
                .and_then(|n| n.parse::<usize>().ok());
            let (Some(n), true) = (n, e.verb == "created") else {
                return;
            };
            let Some(word) = me.bits.get(socket * me.words + n / 64) else {
                return;
            };
            let bit = 1u64 << (n % 64);
            if word.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
                me.got.fetch_add(1, Ordering::Relaxed);
            }
        })
    }
}

/// Connects `n` sockets, 250 at a time, socket `i` with `hs(i)`; with
/// `watch`, each then watches pets.
async fn connect_all(
    addr: &str,
    n: usize,
    seen: &Arc<Seen>,
    watch: bool,
) -> Res<(Vec<Socket>, usize)> {
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let mut batch = Vec::new();
        for &i in chunk {
            let (addr, on, hs) = (addr.to_owned(), seen.on_event(i), key("avalanche", i));
            batch.push(tokio::spawn(async move {
                if watch {
                    watching(&addr, on, &hs).await
                } else {
                    Socket::connect_with(&addr, on, &hs).await
                }
            }));
        }
        for b in batch {
            match b.await.map_err(|e| e.to_string())? {
                Ok(s) => out.push(s),
                Err(_) => failed += 1,
            }
        }
    }
    Ok((out, failed))
}

/// `subs` sockets watch pets while pets are created at `rate`/s for
/// `secs`; `drop_after` seconds in, every connection is dropped at once
/// and every socket comes back with its resume key (no request of its
/// own). Delivered share (each create to each socket, once counted), the
/// time until the last socket has every create, and the server's memory.
pub(crate) async fn avalanche(
    server: &Server,
    subs: usize,
    rate: f64,
    secs: f64,
    drop_after: f64,
) -> Res<Value> {
    let creates = (rate * secs) as usize;
    let seen = Seen::new(subs, creates);
    let (sockets, failed) = connect_all(&server.addr, subs, &seen, true).await?;
    if failed > 0 {
        return Err(format!("{failed} of {subs} sockets did not connect"));
    }
    let pid = server.child.id();
    let rss_before = rss_kb(pid);
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    if std::env::var_os("BENCH_TRACE").is_some() {
        eprintln!("avalanche: measured phase starts (pid {pid})");
    }
    let cpu0 = cpu_us(pid);
    let start = Instant::now();
    let names: Vec<String> = (0..creates).map(|i| format!("a{i}")).collect();
    let addr = server.addr.clone();
    let writer =
        tokio::spawn(
            async move { create_pets(&addr, Arc::new(names), 4, Some((rate, start))).await },
        );
    tokio::time::sleep_until((start + Duration::from_secs_f64(drop_after)).into()).await;
    for s in &sockets {
        s.drop_connection();
    }
    let dropped_at = Instant::now();
    drop(sockets);
    let (mut back, failed) = connect_all(&server.addr, subs, &seen, false).await?;
    let reconnect_s = dropped_at.elapsed().as_secs_f64();
    let expected = (subs * creates) as u64;
    // A socket the server cuts (it did not read fast enough, see
    // `RealtimeConfig::send_queue`) comes back, as sails.io.js does.
    let mut cut_and_back = 0;
    let mut writes_done: Option<Instant> = None;
    while seen.got.load(Ordering::Relaxed) < expected
        && writes_done.is_none_or(|t| t.elapsed() < Duration::from_secs(60))
    {
        if writes_done.is_none() && writer.is_finished() {
            writes_done = Some(Instant::now());
        }
        for (i, s) in back.iter_mut().enumerate() {
            if s.closed.load(Ordering::Acquire) {
                let hs = key("avalanche", i);
                *s = Socket::connect_with(&server.addr, seen.on_event(i), &hs).await?;
                cut_and_back += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.map_err(|e| e.to_string())??;
    let writes_done = writes_done.unwrap_or_else(Instant::now);
    let caught_up_after_writes = writes_done.elapsed().as_secs_f64();
    let caught_up_after_drop = dropped_at.elapsed().as_secs_f64();
    let cpu = cpu_us(pid) - cpu0;
    if std::env::var_os("BENCH_TRACE").is_some() {
        eprintln!("avalanche: measured phase ends (pid {pid})");
    }
    sampling.abort();
    for s in &back {
        s.close();
    }
    let got = seen.got.load(Ordering::Relaxed);
    let resumes = resume_counts(&server.addr).await;
    Ok(json!({
        "resumes": resumes,
        "subscribers": subs, "creates": creates, "creates_per_s": rate, "dropped_after_s": drop_after,
        "reconnect_failures": failed, "reconnect_s": reconnect_s, "cut_and_back": cut_and_back,
        "delivered": got, "expected": expected, "delivered_share": got as f64 / expected.max(1) as f64,
        "caught_up_after_writes_s": caught_up_after_writes, "caught_up_after_drop_s": caught_up_after_drop,
        "rss_before_kb": rss_before, "rss_peak_kb": peak.load(Ordering::Relaxed),
        "server_cpu_s": cpu as f64 / 1e6,
    }))
}
