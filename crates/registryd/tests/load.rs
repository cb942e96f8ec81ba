//! Load: 32 concurrent clients fetch every manifest and blob of the cache for a bounded time,
//! hash what comes back and compare it with the digest; no request may fail, no byte may be
//! wrong, and the resident memory of the server must stay flat.
//!
//! The server runs in a process of its own (this test binary, run again as the server: see
//! [`server_process_of_the_load_test`]), so that its RSS is measured without the 32 clients'.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Fixture;
use sha2::{Digest as _, Sha256};

const CLIENTS: usize = 32;
/// Set in the environment of the server process: the cache root it serves.
const SERVE_ROOT: &str = "REGISTRYD_LOAD_TEST_ROOT";

/// The measured run; `REGISTRYD_LOAD_SECS` makes it longer (to look for slow growth by hand).
fn run_time() -> Duration {
    let secs = std::env::var("REGISTRYD_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

/// Not a test of its own: the load test runs this binary again with `REGISTRYD_LOAD_TEST_ROOT`
/// set, and then this is the server it measures, printing `listening <addr>` and serving until
/// its stdin closes. Without the variable (every ordinary run) it returns at once.
#[test]
fn server_process_of_the_load_test() {
    let Some(root) = std::env::var_os(SERVE_ROOT) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = imager_registryd::Config::new([std::path::PathBuf::from(root)]);
        config.address = "127.0.0.1:0".parse().unwrap();
        let server = imager_registryd::Server::bind(config).await.unwrap();
        println!("listening {}", server.local_addr());
        server
            .serve(async {
                // The parent holds our stdin: its end (done, or dead) stops the server.
                let _ = tokio::task::spawn_blocking(|| {
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                })
                .await;
            })
            .await
            .unwrap();
    });
}

/// The server process; killed on drop.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(root: &std::path::Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "server_process_of_the_load_test",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SERVE_ROOT, root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // libtest has printed `test <name> ... ` on the same line.
                if let Some((_, addr)) = line.split_once("listening ") {
                    let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server process did not start");
        Self { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `url`, hashing the body as it streams (the client holds no whole blob either).
async fn fetch(client: &reqwest::Client, url: &str) -> Result<(String, u64), String> {
    let mut r = client.get(url).send().await.map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("{url}: {}", r.status()));
    }
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = r.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        hasher.update(&chunk);
        n += chunk.len() as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), n))
}

/// Runs the clients, each over all targets starting at its own offset: for `duration`, or one
/// pass. Returns requests, bytes and errors.
async fn run(
    client: &reqwest::Client,
    targets: &Arc<Vec<(String, String)>>,
    duration: Option<Duration>,
) -> (u64, u64, Vec<String>) {
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let deadline = duration.map(|d| Instant::now() + d);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (targets, client) = (Arc::clone(targets), client.clone());
        let (requests, bytes) = (Arc::clone(&requests), Arc::clone(&bytes));
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = c;
            loop {
                let (url, want) = &targets[i % targets.len()];
                match fetch(&client, url).await {
                    Ok((got, n)) if &got == want => {
                        bytes.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok((got, _)) => errors.push(format!("{url}: got {got}")),
                    Err(e) => errors.push(e),
                }
                requests.fetch_add(1, Ordering::Relaxed);
                i += 1;
                let done = match deadline {
                    Some(d) => Instant::now() >= d,
                    None => i >= c + targets.len(),
                };
                if done {
                    return errors;
                }
            }
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    (
        requests.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
        errors,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_every_byte_right_with_flat_memory() {
    let f = Fixture::new();
    let server = ServerProcess::start(f.root());
    let url = |path: String| format!("http://{}{path}", server.addr);
    // Every manifest (by tag and by digest) and every blob, with the digest its bytes must have.
    let mut targets: Vec<(String, String)> = Vec::new();
    for img in f.images() {
        let (repo, ns) = (img.repo(), img.ns());
        let tag = url(format!("/v2/{repo}/manifests/{}?{ns}", img.tag));
        targets.push((tag, img.top.digest.clone()));
        for m in &img.manifests {
            let by_digest = url(format!("/v2/{repo}/manifests/{}?{ns}", m.digest));
            targets.push((by_digest, m.digest.clone()));
        }
        for b in &img.blobs {
            targets.push((
                url(format!("/v2/{repo}/blobs/{}", b.digest)),
                b.digest.clone(),
            ));
        }
    }
    let targets = Arc::new(targets);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();

    // Warm-up: connections, buffers, threads and hash verdicts exist after it.
    let (_, _, errors) = run(&client, &targets, None).await;
    assert!(errors.is_empty(), "warm-up errors: {errors:?}");
    let (_, _, errors) = run(&client, &targets, Some(Duration::from_secs(2))).await;
    assert!(errors.is_empty(), "warm-up errors: {errors:?}");
    let before = server.rss_kib();

    // Sample the server's resident memory while the load runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        let pid = server.child.id();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                let rss: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap();
                samples.push(rss);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    let started = Instant::now();
    let (requests, bytes, errors) = run(&client, &targets, Some(run_time())).await;
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let after = server.rss_kib();
    let threads = std::fs::read_to_string(format!("/proc/{}/status", server.child.id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|t| t.trim().to_owned()))
        .unwrap_or_default();
    let peak = samples.iter().copied().max().unwrap_or(after).max(after);
    let per_second: Vec<u64> = samples.iter().step_by(10).map(|k| k >> 10).collect();
    eprintln!(
        "load: {CLIENTS} clients, {requests} requests, {} MiB in {:.1} s ({:.0} MiB/s); server \
         RSS {before} KiB before, {peak} KiB peak, {after} KiB after; MiB each second: \
         {per_second:?}; {threads} threads",
        bytes >> 20,
        elapsed.as_secs_f64(),
        (bytes >> 20) as f64 / elapsed.as_secs_f64(),
    );
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert!(requests > CLIENTS as u64 * 10, "only {requests} requests");
    // Flat: a few 64 KiB pieces per connection at most, whatever the number of requests.
    assert!(
        peak <= before + 8 * 1024,
        "server RSS grew under load: {before} KiB -> peak {peak} KiB"
    );
    assert!(peak <= 64 * 1024, "server RSS {peak} KiB is over 64 MiB");
}
