//! Tools behind `bench/run`: seed a database with many tokens in batches,
//! warm a server's cache with them, drive CreateToken with concurrent
//! clients, and flood Verify with unknown tokens. Each prints one JSON line
//! of results on stdout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, Subcommand};
use latchkey::auth::Actor;
use latchkey::cache::{CacheConfig, Cached, VerifyCache};
use latchkey::clock::{Clock as _, SystemClock};
use latchkey::grpc::pb::token_admin_client::TokenAdminClient;
use latchkey::grpc::pb::token_verify_client::TokenVerifyClient;
use latchkey::grpc::pb::{self, CreateTokenRequest, VerifyRequest};
use latchkey::lifecycle::{Expiry, NewToken};
use latchkey::store::Store;
use latchkey::token::{TokenKey, TokenRecord};
use latchkey::verifier::Snapshot;
use latchkey::{Settings, grpc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

#[path = "../../src/allocator.rs"]
mod allocator;
mod load;

/// The server's allocator, so that memory figures match.
#[global_allocator]
static ALLOCATOR: allocator::Segregated = allocator::Segregated;

#[derive(Parser)]
#[command(about = "Load and seeding tools for latchkey's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates tokens straight into the database named by
    /// LATCHKEY_DATABASE_URL (digested with LATCHKEY_HMAC_KEY), in batched
    /// transactions, and writes their secrets one per line.
    Seed {
        #[arg(long)]
        count: usize,
        /// Tokens are spread over this many owners.
        #[arg(long, default_value_t = 10_000)]
        owners: usize,
        /// Tokens per transaction.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verifies every token in a file once, so the server caches them all.
    Warm {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Fills a Verify cache in this process with COUNT token snapshots (as a
    /// cache miss would) and reports the resident memory each one costs.
    CacheMemory {
        #[arg(long, default_value_t = 1_000_000)]
        count: usize,
        /// Cache "unknown" markers instead of snapshots: the cost of the
        /// cache's own bookkeeping alone.
        #[arg(long)]
        markers_only: bool,
    },
    /// CreateToken from concurrent clients, each on its own connection, for
    /// a fixed time; every call for a new owner.
    Create {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 16)]
        clients: usize,
        #[arg(long, default_value = "10s", value_parser = humantime_duration)]
        duration: Duration,
        #[arg(long, env = "LATCHKEY_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: String,
    },
    /// Verify with a new well-formed random token every call (each a cache
    /// miss, each UNKNOWN), CONCURRENCY calls in flight over CONNECTIONS
    /// connections, until standard input closes.
    Flood {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value = "lk")]
        prefix: String,
    },
    /// Verify at full speed for SECONDS over the first COUNT tokens of a
    /// file, each call the next token in turn.
    Load {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 16)]
        streams: usize,
    },
    /// Opens STREAMS calls to each gRPC PATH, each announcing a 4 MiB
    /// request message and sending its first 64 KiB, and holds them until
    /// standard input closes; prints how the server answered them.
    Unfinished {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 512)]
        streams: usize,
        #[arg(long = "path", required = true)]
        paths: Vec<String>,
    },
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    s.trim_end_matches('s')
        .parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("{s}: {e} (seconds, like 10s)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed {
            count,
            owners,
            batch,
            out,
        } => seed(count, owners.max(1), batch.max(1), out).await,
        Command::Warm {
            addr,
            tokens,
            concurrency,
        } => warm(&addr, tokens, concurrency.max(1)).await,
        Command::CacheMemory {
            count,
            markers_only,
        } => {
            cache_memory(count, markers_only);
            Ok(())
        }
        Command::Create {
            addr,
            clients,
            duration,
            admin_token,
        } => create(&addr, clients.max(1), duration, &admin_token).await,
        Command::Flood {
            addr,
            connections,
            concurrency,
            prefix,
        } => flood(&addr, connections.max(1), concurrency.max(1), &prefix).await,
        Command::Unfinished {
            addr,
            streams,
            paths,
        } => unfinished(&addr, streams, &paths).await,
        Command::Load {
            addr,
            tokens,
            count,
            seconds,
            connections,
            streams,
        } => {
            load::load(
                &addr,
                &tokens,
                count,
                seconds,
                connections.max(1),
                streams.max(1),
            )
            .await
        }
    }
}

async fn seed(count: usize, owners: usize, batch: usize, out: PathBuf) -> anyhow::Result<()> {
    let settings = Settings::load(None)?;
    let store = Store::connect(&settings.database_url, settings.database_max_connections).await?;
    store.migrate().await?;
    let lifecycle = latchkey::setup::offline_lifecycle(store.clone(), &settings).await?;
    let mut file = BufWriter::new(tokio::fs::File::create(&out).await?);
    let started = Instant::now();
    let mut made = 0;
    while made < count {
        let n = batch.min(count - made);
        let tokens = (made..made + n)
            .map(|i| NewToken {
                owner: format!("bench-owner-{}", i % owners),
                name: format!("bench token {i}"),
                description: String::new(),
                scopes: vec!["read".into(), "write".into()],
                metadata: Default::default(),
                expiry: Expiry::Never,
                idle_timeout: None,
                credits: None,
                rate_limits: Vec::new(),
            })
            .collect();
        let created = lifecycle
            .bulk_create(tokens, Actor::System)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (_, secret) in created {
            file.write_all(secret.expose().as_bytes()).await?;
            file.write_all(b"\n").await?;
        }
        made += n;
    }
    file.flush().await?;
    store.close().await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"seeded": count, "seconds": secs, "per_second": count as f64 / secs})
    );
    Ok(())
}

fn cache_memory(count: usize, markers_only: bool) {
    let cache = VerifyCache::new(CacheConfig {
        capacity: count as u64,
        ttl: Duration::from_secs(3600),
        // As long as the known tokens' ttl: no marker lapses mid-measurement.
        negative_ttl: Duration::from_secs(3600),
    });
    let key = TokenKey::from_encoded(&"11".repeat(32)).expect("a valid key");
    let now = SystemClock.now();
    let before = resident_bytes();
    for i in 0..count {
        let record = TokenRecord {
            name: format!("bench token {i}"),
            scopes: vec!["read".into(), "write".into()],
            display_hint: format!("lk_…{:04}", i % 10_000),
            ..TokenRecord::new(Uuid::now_v7(), format!("bench-owner-{}", i % 10_000), now)
        };
        let digest = key.digest(&format!("token {i}"));
        let ticket = cache.begin_fill(&digest);
        let snapshot = Snapshot::new(&record, false, grpc::render_token);
        let entry = if markers_only {
            Cached::Unknown
        } else {
            Cached::Known(Arc::new(snapshot))
        };
        cache.complete_fill(ticket, digest, entry);
    }
    let entries = cache.entry_count();
    let after = resident_bytes();
    println!(
        "{}",
        serde_json::json!({
            "entries": entries,
            "resident_before": before,
            "resident_after": after,
            "bytes_per_entry": (after - before) as f64 / count as f64,
        })
    );
}

/// This process's resident set size, from /proc/self/statm.
fn resident_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(addr.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

async fn warm(addr: &str, tokens: PathBuf, concurrency: usize) -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::fs::File::open(&tokens).await?).lines();
    let mut all = Vec::new();
    while let Some(line) = lines.next_line().await? {
        all.push(line);
    }
    let all = Arc::new(all);
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let client = TokenVerifyClient::new(channel(addr).await?);
        let all = Arc::clone(&all);
        workers.push(tokio::spawn(async move {
            let mut client = client;
            let mut not_valid = 0u64;
            for token in all.iter().skip(w).step_by(concurrency) {
                let reply = client
                    .verify(VerifyRequest {
                        token: token.clone(),
                        required_scopes: vec![],
                        cost: None,
                        client: None,
                    })
                    .await?
                    .into_inner();
                if reply.verdict() != pb::Verdict::Valid {
                    not_valid += 1;
                }
            }
            anyhow::Ok(not_valid)
        }));
    }
    let mut not_valid = 0;
    for w in workers {
        not_valid += w.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "verified": all.len(), "not_valid": not_valid, "seconds": secs,
            "per_second": all.len() as f64 / secs,
        })
    );
    if not_valid > 0 {
        bail!("{not_valid} tokens did not verify as VALID");
    }
    Ok(())
}

async fn create(
    addr: &str,
    clients: usize,
    duration: Duration,
    admin_token: &str,
) -> anyhow::Result<()> {
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {admin_token}").parse()?;
    let run = std::process::id();
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for c in 0..clients {
        let mut client = TokenAdminClient::new(channel(addr).await?);
        let bearer = bearer.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut request = tonic::Request::new(CreateTokenRequest {
                    owner: format!("load-{run}-{c}-{n}"),
                    name: "load".into(),
                    scopes: vec!["read".into()],
                    ..Default::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                n += 1;
                let t0 = Instant::now();
                match client.create_token(request).await {
                    Ok(_) => latencies.push(t0.elapsed()),
                    Err(status) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("CreateToken failed: {}", status.message());
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        latencies.extend(l);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{}",
        serde_json::json!({
            "created": latencies.len(), "errors": errors, "seconds": secs,
            "per_second": latencies.len() as f64 / secs,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
        })
    );
    if errors > 0 {
        bail!("{errors} CreateToken calls failed");
    }
    Ok(())
}

async fn flood(
    addr: &str,
    connections: usize,
    concurrency: usize,
    prefix: &str,
) -> anyhow::Result<()> {
    let prefix = latchkey::token::Prefix::new(prefix).map_err(anyhow::Error::msg)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(channel(addr).await?);
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let mut client = TokenVerifyClient::new(channels[w % connections].clone());
        let (stop, prefix) = (stop.clone(), prefix.clone());
        workers.push(tokio::spawn(async move {
            // Calls answered UNKNOWN, refused UNAVAILABLE, failed otherwise.
            let mut counts = [0u64; 3];
            while !stop.is_cancelled() {
                let token = latchkey::token::format::generate(&prefix)?
                    .expose()
                    .to_owned();
                let request = VerifyRequest {
                    token,
                    required_scopes: vec![],
                    cost: None,
                    client: None,
                };
                match client.verify(request).await {
                    Ok(reply) if reply.get_ref().verdict() == pb::Verdict::Unknown => {
                        counts[0] += 1;
                    }
                    Err(status) if status.code() == tonic::Code::Unavailable => counts[1] += 1,
                    _ => counts[2] += 1,
                }
            }
            anyhow::Ok(counts)
        }));
    }
    // Runs until whoever started it closes standard input.
    let mut stdin = tokio::io::stdin();
    let mut sink = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stdin, &mut sink).await?;
    stop.cancel();
    let mut counts = [0u64; 3];
    for w in workers {
        for (total, n) in counts.iter_mut().zip(w.await??) {
            *total += n;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let [unknown, refused, failed] = counts;
    println!(
        "{}",
        serde_json::json!({
            "calls": unknown + refused + failed, "unknown": unknown, "refused": refused,
            "failed": failed, "seconds": secs,
            "per_second": (unknown + refused + failed) as f64 / secs,
        })
    );
    if failed > 0 {
        bail!("{failed} flood calls neither UNKNOWN nor UNAVAILABLE");
    }
    Ok(())
}

async fn unfinished(addr: &str, streams: usize, paths: &[String]) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = addr.trim_start_matches("http://").parse()?;
    let mut answers = tokio::task::JoinSet::new();
    let mut held = Vec::new();
    for path in paths {
        // 128 calls per connection, under the server's stream limit.
        let mut left = streams;
        while left > 0 {
            let here = left.min(128);
            left -= here;
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let (client, connection) = h2::client::handshake(tcp).await?;
            tokio::spawn(connection);
            for _ in 0..here {
                let mut client = client.clone().ready().await?;
                let request = http::Request::post(format!("http://{addr}{path}"))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(())?;
                let (response, mut stream) = client.send_request(request, false)?;
                let mut start = vec![0u8];
                start.extend_from_slice(&(4u32 << 20).to_be_bytes());
                start.resize(5 + 64 * 1024, b'x');
                let _ = stream.send_data(start.into(), false);
                held.push(stream);
                answers.spawn(async move {
                    let Ok(response) = response.await else {
                        return "reset".to_owned();
                    };
                    if let Some(status) = response.headers().get("grpc-status") {
                        return format!("grpc-status {}", status.to_str().unwrap_or("?"));
                    }
                    let mut body = response.into_body();
                    while let Some(chunk) = body.data().await {
                        if chunk.is_err() {
                            return "reset".to_owned();
                        }
                    }
                    match body.trailers().await {
                        Ok(Some(t)) => format!(
                            "grpc-status {}",
                            t.get("grpc-status")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("?")
                        ),
                        _ => "no trailers".to_owned(),
                    }
                });
            }
        }
    }
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    while let Some(answer) = answers.join_next().await {
        *counts.entry(answer?).or_default() += 1;
    }
    println!("{}", serde_json::to_string(&counts)?);
    // Held open (whatever the server made of them) until told to stop.
    let mut line = String::new();
    let _ = BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    drop(held);
    Ok(())
}
