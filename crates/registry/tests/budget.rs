//! The retry budget against a registry that accepts connections and never answers: the client
//! gives up within `RetryPolicy::max_elapsed` of the first attempt's start, and the time it reports
//! is the time that really passed (connect and read timeouts included, not just the backoff).

use std::time::{Duration, Instant};

use imager_registry::{Client, ClientConfig, DockerConfigSource, Error, Reference, RetryPolicy};

/// Accepts every connection and holds it open without reading or writing a byte.
async fn silent_registry() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

fn config(insecure: bool) -> ClientConfig {
    ClientConfig {
        insecure,
        docker_config: DockerConfigSource::None,
        connect_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_millis(700),
        retry: RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            max_elapsed: Duration::from_millis(2500),
        },
        ..ClientConfig::default()
    }
}

async fn gives_up_in_budget(insecure: bool) {
    let (addr, task) = silent_registry().await;
    let config = config(insecure);
    let budget = config.retry.max_elapsed;
    let client = Client::new(config).expect("client");
    let image = Reference::parse(&format!("{addr}/test/silent:v1")).expect("reference");
    let started = Instant::now();
    let err = client
        .get_manifest(&image)
        .await
        .expect_err("never answers");
    let measured = started.elapsed();
    task.abort();
    let Error::GaveUp {
        attempts, elapsed, ..
    } = &err
    else {
        panic!("expected GaveUp, got {err:?}");
    };
    let msg = err.to_string();
    assert!(msg.contains("gave up after"), "{msg}");
    // The reported time is the real one (the test's own measurement also covers building the
    // request, hence the tolerance).
    let gap = measured.abs_diff(*elapsed);
    assert!(
        gap < Duration::from_millis(150),
        "reported {elapsed:?} after {attempts} attempts, measured {measured:?}"
    );
    // The whole budget bounds the request, however its attempts were spent.
    assert!(
        measured < budget + Duration::from_millis(300),
        "gave up after {measured:?}, budget {budget:?} ({msg})"
    );
    assert!(*attempts >= 2, "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_registry_gives_up_within_the_budget_and_reports_real_time() {
    gives_up_in_budget(false).await;
}

/// `--insecure` first tries HTTPS (whose handshake stalls until the connect timeout), then HTTP:
/// both count against the same budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_registry_insecure_gives_up_within_the_budget() {
    gives_up_in_budget(true).await;
}
