//! The three scenarios.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::report::{Latency, Report, histogram};
use crate::system;
use crate::target::{RECEIVER_GROUP, SENDER_GROUP, Target};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Read buffer of each client socket, in bytes.
const CLIENT_READ_BUFFER: usize = 8 * 1024;

/// Handshakes in flight at once while opening sockets.
const CONNECT_CONCURRENCY: usize = 256;

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Sockets of the receiving group, spread over the gateways.
    #[arg(long, default_value_t = 10_000)]
    pub sockets: usize,
    /// Notifications to post.
    #[arg(long, default_value_t = 60)]
    pub notifications: usize,
    /// Notifications per second; 0 posts as fast as the server accepts them.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// POSTs in flight at once when --rate is 0.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// How long to wait for the last deliveries after the last POST, in seconds.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Sockets to open.
    #[arg(long, default_value_t = 20_000)]
    pub sockets: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestArgs {
    /// Concurrent clients, each creating a notification and then confirming it.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
}

/// The counts and latencies that one socket observed during a fan-out run.
///
/// Everything is allocated before the first POST: a reader that allocated or built a histogram
/// while frames arrive would charge the load generator's own work to the gateway's latency.
struct SocketTally {
    /// Latency of each notification in µs, 0 until it arrives.
    latency_us: Vec<u32>,
    received: u64,
    duplicated: u64,
    out_of_order: u64,
    last_receive_us: u64,
}

impl SocketTally {
    fn new(notifications: usize) -> Self {
        Self {
            latency_us: vec![0; notifications],
            received: 0,
            duplicated: 0,
            out_of_order: 0,
            last_receive_us: 0,
        }
    }
}

pub async fn fanout(target: &Target, args: &FanoutArgs) -> anyhow::Result<Report> {
    let sockets = open_sockets(target, args.sockets, "open sockets").await?;
    if sockets.failures > 0 {
        bail!(
            "{} of {} sockets failed to connect (first error: {})",
            sockets.failures,
            args.sockets,
            sockets.first_error.unwrap_or_default()
        );
    }

    let base = Instant::now();
    let total = args.notifications;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let run = format!("{:x}", std::process::id());
    let marker = format!("\"content\":\"bench:{run}:");

    let parked = Arc::new(Parked::default());
    let mut readers = Vec::with_capacity(sockets.open.len());
    for socket in sockets.open {
        readers.push(tokio::spawn(read_deliveries(
            socket,
            SocketTally::new(total),
            marker.clone(),
            sent_at.clone(),
            base,
            Duration::from_secs(args.drain_secs),
            parked.clone(),
        )));
    }
    // The first notification must not race the readers' first polls.
    parked.wait_for(readers.len()).await;

    let cpu_before = target
        .pids
        .first()
        .and_then(|pid| system::cpu_seconds(*pid));
    let progress = progress_bar(total as u64, "post notifications");
    let token = target.token("bench-sender", SENDER_GROUP);
    let client = reqwest::Client::new();
    let post = |n: usize| {
        let client = client.clone();
        let url = target.url(n, "/api/notifications/");
        let token = token.clone();
        let sent_at = sent_at.clone();
        let body = json!({"content": format!("bench:{run}:{n}"), "receiver_group": RECEIVER_GROUP});
        async move {
            sent_at[n].store(base.elapsed().as_micros() as u64, Ordering::Release);
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("POST /api/notifications/ returned {}", response.status());
            }
            Ok::<_, anyhow::Error>(())
        }
    };

    let first_send_us = base.elapsed().as_micros() as u64;
    if args.rate > 0.0 {
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for n in 0..total {
            ticker.tick().await;
            post(n).await?;
            progress.inc(1);
        }
    } else {
        let mut posts = stream::iter(0..total)
            .map(post)
            .buffer_unordered(args.concurrency.max(1));
        while let Some(result) = posts.next().await {
            result?;
            progress.inc(1);
        }
    }
    progress.finish_and_clear();

    let mut latency = histogram();
    let (mut received, mut duplicated, mut out_of_order, mut last_receive_us) = (0, 0, 0, 0);
    let mut to_last_socket = vec![0u64; total];
    let mut finished = Vec::with_capacity(readers.len());
    for reader in readers {
        let (tally, socket) = reader.await.context("a socket reader panicked")?;
        finished.push(socket);
        for (slowest, &micros) in to_last_socket.iter_mut().zip(&tally.latency_us) {
            if micros > 0 {
                let _ = latency.record(u64::from(micros));
                *slowest = (*slowest).max(u64::from(micros));
            }
        }
        received += tally.received;
        duplicated += tally.duplicated;
        out_of_order += tally.out_of_order;
        last_receive_us = last_receive_us.max(tally.last_receive_us);
    }
    let cpu_after = target
        .pids
        .first()
        .and_then(|pid| system::cpu_seconds(*pid));
    drop(finished);

    let expected = (total * args.sockets) as u64;
    let seconds = (last_receive_us.saturating_sub(first_send_us)) as f64 / 1e6;
    let mut report = Report::new("fanout");
    report.add("gateways", target.urls.len());
    report.add("sockets", args.sockets);
    report.add("notifications", total);
    report.add("rate_per_second", args.rate);
    report.add("connect_seconds", sockets.elapsed.as_secs_f64());
    report.add("latency", Latency::from_micros(&latency));
    let mut last_socket = histogram();
    for latency in &to_last_socket {
        let _ = last_socket.record((*latency).max(1));
    }
    report.add("latency_to_last_socket", Latency::from_micros(&last_socket));
    let mut slowest: Vec<(usize, u64)> = to_last_socket.iter().copied().enumerate().collect();
    slowest.sort_by_key(|(_, latency)| std::cmp::Reverse(*latency));
    let slowest: Vec<String> = slowest
        .iter()
        .take(3)
        .map(|(n, latency)| format!("#{n}: {:.1} ms", *latency as f64 / 1000.0))
        .collect();
    report.add("slowest_notifications", slowest.join(", "));
    report.add("deliveries", received);
    report.add(
        "deliveries_per_second",
        if seconds > 0.0 {
            received as f64 / seconds
        } else {
            0.0
        },
    );
    report.add("lost", expected.saturating_sub(received));
    report.add("duplicated", duplicated);
    report.add("out_of_order", out_of_order);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after)
        && received > 0
    {
        report.add("gateway_cpu_seconds", after - before);
        report.add(
            "gateway_cpu_us_per_delivery",
            (after - before) * 1e6 / received as f64,
        );
    }
    Ok(report)
}

/// Counts the readers that are waiting for their first frame.
#[derive(Default)]
struct Parked {
    count: AtomicUsize,
    changed: Notify,
}

impl Parked {
    fn arrive(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    async fn wait_for(&self, readers: usize) {
        loop {
            let changed = self.changed.notified();
            if self.count.load(Ordering::Acquire) >= readers {
                return;
            }
            changed.await;
        }
    }
}

/// Reads frames until every notification arrived or the drain time after the last send ran out.
async fn read_deliveries(
    mut socket: Socket,
    mut tally: SocketTally,
    marker: String,
    sent_at: Arc<Vec<AtomicU64>>,
    base: Instant,
    drain: Duration,
    parked: Arc<Parked>,
) -> (SocketTally, Socket) {
    let total = tally.latency_us.len() as u64;
    let mut last_seq = 0u64;
    let mut idle_since = Instant::now();
    parked.arrive();

    while tally.received < total {
        let wait = drain.saturating_sub(idle_since.elapsed());
        let message = match tokio::time::timeout(wait, socket.next()).await {
            Ok(Some(Ok(message))) => message,
            _ => break,
        };
        let Message::Text(text) = message else {
            continue;
        };
        let now_us = base.elapsed().as_micros() as u64;
        let Some(n) = number_after(&text, &marker) else {
            continue;
        };
        let Some(seq) = number_after(&text, "\"seq\":") else {
            continue;
        };
        idle_since = Instant::now();

        if seq <= last_seq {
            tally.out_of_order += 1;
        }
        last_seq = last_seq.max(seq);
        let Some(slot) = tally.latency_us.get_mut(n as usize) else {
            continue;
        };
        if *slot > 0 {
            tally.duplicated += 1;
            continue;
        }
        let sent = sent_at[n as usize].load(Ordering::Acquire);
        *slot = now_us.saturating_sub(sent).clamp(1, u64::from(u32::MAX)) as u32;
        tally.received += 1;
        tally.last_receive_us = now_us;
    }
    // Closing now would load the gateway while other sockets still wait for frames; the caller
    // drops every socket once all readers are done.
    (tally, socket)
}

/// Parses the decimal number that follows `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let start = text.find(prefix)? + prefix.len();
    let digits = text[start..].bytes().take_while(u8::is_ascii_digit).count();
    text[start..start + digits].parse().ok()
}

pub async fn connect(target: &Target, args: &ConnectArgs) -> anyhow::Result<Report> {
    let pid = target.pids.first().copied();
    let before = pid.and_then(system::resident_bytes);

    let sockets = open_sockets(target, args.sockets, "connect").await?;
    // Let the gateway finish each session's set-up before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pid.and_then(system::resident_bytes);

    let mut report = Report::new("connect");
    report.add("gateways", target.urls.len());
    report.add("sockets", args.sockets);
    report.add("connected", sockets.open.len());
    report.add("failures", sockets.failures);
    if let Some(error) = &sockets.first_error {
        report.add("first_error", error);
    }
    report.add("seconds", sockets.elapsed.as_secs_f64());
    report.add(
        "sockets_per_second",
        sockets.open.len() as f64 / sockets.elapsed.as_secs_f64(),
    );
    match (before, after) {
        (Some(before), Some(after)) if !sockets.open.is_empty() => {
            report.add("gateway_rss_before_mib", before as f64 / 1_048_576.0);
            report.add("gateway_rss_after_mib", after as f64 / 1_048_576.0);
            report.add(
                "gateway_kib_per_socket",
                after.saturating_sub(before) as f64 / 1024.0 / sockets.open.len() as f64,
            );
        }
        _ => report.add(
            "gateway_kib_per_socket",
            "unknown: pass --pid of a local gateway, or let the bench start it",
        ),
    }
    drop(sockets);
    Ok(report)
}

pub async fn rest(target: &Target, args: &RestArgs) -> anyhow::Result<Report> {
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let progress = progress_bar(args.duration_secs, "run REST clients (seconds)");
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                progress.inc(1);
            }
        })
    };

    let started = Instant::now();
    let mut workers = Vec::with_capacity(args.clients);
    for worker in 0..args.clients {
        let client = client.clone();
        let create_url = target.url(worker, "/api/notifications/");
        let base = target.urls[worker % target.urls.len()].clone();
        let sender = target.token(&format!("bench-sender-{worker}"), SENDER_GROUP);
        let confirmer = target.token(&format!("bench-clerk-{worker}"), RECEIVER_GROUP);
        workers.push(tokio::spawn(async move {
            let (mut create, mut confirm) = (histogram(), histogram());
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let body = json!({"content": format!("bench rest {worker}/{n}"), "receiver_group": RECEIVER_GROUP});
                let sent = Instant::now();
                let response = client.post(&create_url).bearer_auth(&sender).json(&body).send().await;
                let id = match response {
                    Ok(response) if response.status().is_success() => {
                        let _ = create.record(sent.elapsed().as_micros() as u64);
                        response
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["id"].as_i64())
                    }
                    _ => None,
                };
                let Some(id) = id else {
                    errors += 1;
                    continue;
                };

                let sent = Instant::now();
                let url = format!("{base}/api/notifications/{id}/confirm/");
                match client.post(url).bearer_auth(&confirmer).send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = confirm.record(sent.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (create, confirm, errors)
        }));
    }

    let (mut create, mut confirm, mut errors) = (histogram(), histogram(), 0);
    for worker in workers {
        let (c, f, e) = worker.await.context("a REST client panicked")?;
        create.add(&c).expect("histograms share bounds");
        confirm.add(&f).expect("histograms share bounds");
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    progress.finish_and_clear();

    let mut report = Report::new("rest");
    report.add("gateways", target.urls.len());
    report.add("clients", args.clients);
    report.add("seconds", seconds);
    report.add("creations_per_second", create.len() as f64 / seconds);
    report.add("confirmations_per_second", confirm.len() as f64 / seconds);
    report.add("create_latency", Latency::from_micros(&create));
    report.add("confirm_latency", Latency::from_micros(&confirm));
    report.add("errors", errors);
    Ok(report)
}

struct OpenSockets {
    open: Vec<Socket>,
    failures: usize,
    first_error: Option<String>,
    elapsed: Duration,
}

/// Opens `count` sockets of the receiving group, round robin over the gateways.
async fn open_sockets(target: &Target, count: usize, label: &str) -> anyhow::Result<OpenSockets> {
    let progress = progress_bar(count as u64, label);
    let started = Instant::now();
    let attempts = stream::iter(0..count)
        .map(|n| {
            let url = target.ws_url(n, &format!("/ws/notifications/{RECEIVER_GROUP}/"));
            let token = target.token(&format!("bench-reader-{n}"), RECEIVER_GROUP);
            // A task per handshake, so that handshakes run on every core rather than in the
            // one task that polls this stream.
            tokio::spawn(async move {
                let mut request = url.into_client_request()?;
                request.headers_mut().insert(
                    "authorization",
                    HeaderValue::from_str(&format!("Bearer {token}"))?,
                );
                // A browser-sized read buffer: the default 128 KiB per socket would make the
                // generator's first read on every socket a large allocation, charged to latency.
                let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
                let (socket, _) =
                    tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                        .await?;
                Ok::<_, anyhow::Error>(socket)
            })
        })
        .buffer_unordered(CONNECT_CONCURRENCY);
    tokio::pin!(attempts);

    let mut opened = OpenSockets {
        open: Vec::with_capacity(count),
        failures: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    while let Some(attempt) = attempts.next().await {
        let attempt = attempt.context("a handshake task panicked")?;
        match attempt {
            Ok(socket) => opened.open.push(socket),
            Err(error) => {
                opened.failures += 1;
                opened
                    .first_error
                    .get_or_insert_with(|| format!("{error:#}"));
            }
        }
        progress.inc(1);
    }
    opened.elapsed = started.elapsed();
    progress.finish_and_clear();
    Ok(opened)
}

fn progress_bar(length: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_after_reads_digits() {
        let frame = r#"{"type":"notification.created","group":"bench-fin","seq":42,"notification":{"content":"bench:1f:7"}}"#;

        assert_eq!(number_after(frame, "\"seq\":"), Some(42));
        assert_eq!(number_after(frame, "\"content\":\"bench:1f:"), Some(7));
        assert_eq!(number_after(frame, "\"missing\":"), None);
    }
}
