//! `mxc-relay webhook listen` under hostile clients: the real binary on 127.0.0.1, attacked by
//! connections that send a request line and one header and then nothing (slowloris) — more of
//! them than its descriptor limit allows — while signed deliveries keep coming; its read and
//! idle deadlines; and signed bodies that are not a JSON object.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use mxc_relay::signature::WebhookSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::BIN;

/// The receiver's secret in every test.
fn secret() -> WebhookSecret {
    WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("a valid secret")
}

/// What a slowloris client sends before falling silent.
const HALF_REQUEST: &[u8] = b"POST /hooks/mxc HTTP/1.1\r\nHost: 127.0.0.1\r\n";

/// `webhook listen` running; killed on drop.
struct Listener {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Listener {
    /// Starts it with `args`, and with at most `nofile` descriptors when given.
    fn start(secret: &WebhookSecret, args: &[&str], nofile: Option<u64>) -> Listener {
        let mut command = Command::new(BIN);
        command
            .args(["webhook", "listen", "--listen", "127.0.0.1:0"])
            .args(["--secret", secret.expose()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("mxc-relay starts");
        // Both streams are drained all along: a full pipe would block the receiver.
        let (first_tx, first_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = first_tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let first = first_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no first line; stderr: {}", stderr.lock().unwrap()));
        let addr = first
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("first line: {first:?}"))
            .parse()
            .expect("IP:PORT");
        Listener {
            child,
            addr,
            stderr,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/mxc", self.addr)
    }

    /// Its `/metrics`, read once.
    async fn metrics(&self) -> Samples {
        let text = fresh_client()
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("a text body");
        Samples(text)
    }
}

/// A `/metrics` text.
struct Samples(String);

impl Samples {
    /// The value of one series (`name{labels}`).
    fn get(&self, series: &str) -> u64 {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {}", self.0))
    }
}

const VERIFIED: &str = r#"mxc_relay_receiver_requests_total{outcome="verified"}"#;
const BAD_BODY: &str = r#"mxc_relay_receiver_requests_total{outcome="bad_body"}"#;
const BAD_SIGNATURE: &str = r#"mxc_relay_receiver_requests_total{outcome="bad_signature"}"#;
const SHED: &str = r#"mxc_relay_receiver_connections_total{event="shed"}"#;
const TIMED_OUT: &str = r#"mxc_relay_receiver_connections_total{event="timed_out"}"#;
const ACCEPT_ERRORS: &str = "mxc_relay_receiver_accept_errors_total";
const OPEN: &str = "mxc_relay_receiver_connections_open";

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that opens a fresh connection for each request, as a new sender would, and gives
/// each request a second.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// POSTs `body` signed with `secret`; the status.
async fn deliver(
    client: &reqwest::Client,
    url: &str,
    secret: &WebhookSecret,
    id: &str,
    body: &[u8],
) -> reqwest::Result<u16> {
    let timestamp = chrono::Utc::now().timestamp();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", secret.sign(id, timestamp, body))
        .body(body.to_vec())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

fn event(n: usize) -> Vec<u8> {
    format!(r#"{{"type":"authorization.declined","timestamp":"2026-01-01T00:00:00Z","data":{{"n":{n}}}}}"#)
        .into_bytes()
}

/// How soon a slowloris client connects again once closed: the attack keeps coming back
/// without turning the test into a benchmark of accept(2) on a shared machine.
const RECONNECT: Duration = Duration::from_millis(100);

/// Slowloris clients: each connects, sends [`HALF_REQUEST`] and holds the connection; when the
/// receiver closes it, it connects again. They run on a thread and runtime of their own, so
/// that their churn does not delay the test's own deliveries on the client side.
struct Attack {
    /// Connections held now.
    held: Arc<AtomicUsize>,
    /// Connections the receiver closed.
    closed: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Attack {
    fn start(addr: SocketAddr, clients: usize) -> Attack {
        let (held, closed, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicU64::new(0)),
            CancellationToken::new(),
        );
        let (h, c, st) = (held.clone(), closed.clone(), stop.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the attack");
            runtime.block_on(attack(addr, clients, h, c, st));
        });
        Attack { held, closed, stop }
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` connections are held.
    async fn hold(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.held() < n {
            assert!(Instant::now() < deadline, "only {} held", self.held());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The attack's clients, until `stop`.
async fn attack(
    addr: SocketAddr,
    clients: usize,
    held: Arc<AtomicUsize>,
    closed: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    for _ in 0..clients {
        let (held, closed, stop) = (held.clone(), closed.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if stream.write_all(HALF_REQUEST).await.is_err() {
                    continue;
                }
                held.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 64];
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = stream.read(&mut buf) => { closed.fetch_add(1, Ordering::SeqCst); }
                }
                held.fetch_sub(1, Ordering::SeqCst);
                // Back soon, as a persistent attacker would.
                tokio::time::sleep(RECONNECT).await;
            }
        });
    }
    stop.cancelled().await;
}

/// Signed deliveries, one after the other on fresh connections, while `attack` goes on: each
/// answered 204 within its second. Says how many connections the attack held as they were
/// sent (the receiver sheds them as fast as they come back), and the slowest answer.
async fn deliveries_get_through(listener: &Listener, attack: &Attack, n: usize) -> String {
    let client = fresh_client();
    let (mut fewest, mut most, mut slowest) = (usize::MAX, 0, Duration::ZERO);
    for i in 0..n {
        let held = attack.held();
        (fewest, most) = (fewest.min(held), most.max(held));
        let sent = Instant::now();
        let status = deliver(
            &client,
            &listener.url(),
            &secret(),
            &format!("evt_{i}"),
            &event(i),
        )
        .await
        .unwrap_or_else(|e| panic!("delivery {i}, {held} slow connections held: {e:?}"));
        slowest = slowest.max(sent.elapsed());
        assert_eq!(status, 204, "delivery {i}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    format!("{n} deliveries answered 204 (slowest in {slowest:.0?}) while the attack held {fewest} to {most} slow connections")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_half_open_connections_than_descriptors_do_not_starve_signed_deliveries() {
    const NOFILE: u64 = 256;
    let listener = Listener::start(&secret(), &[], Some(NOFILE));
    // More than the receiver could ever hold at once: the rest wait in its kernel queue, and
    // each one closed comes back.
    let attack = Attack::start(listener.addr, 400);
    attack.hold(NOFILE as usize + 20).await;
    let before = listener.metrics().await;

    let delivered = deliveries_get_through(&listener, &attack, 20).await;

    let after = listener.metrics().await;
    println!(
        "descriptor limit {NOFILE}: {delivered}; {} open in the receiver, accepts failed {} times before the deliveries and {} in all, {} connections shed, {} seen closed by the attack",
        after.get(OPEN),
        before.get(ACCEPT_ERRORS),
        after.get(ACCEPT_ERRORS),
        after.get(SHED),
        attack.closed.load(Ordering::SeqCst)
    );
    assert_eq!(after.get(VERIFIED), 20);
    assert!(
        before.get(ACCEPT_ERRORS) > 0,
        "the descriptor limit was reached"
    );
    assert!(
        after.get(ACCEPT_ERRORS) > before.get(ACCEPT_ERRORS),
        "and still was while the deliveries went through"
    );
    assert!(after.get(SHED) > 0, "slow connections were shed");
    assert!(after.get(OPEN) < NOFILE);
    let stderr = listener.stderr.lock().unwrap().clone();
    assert_eq!(
        stderr.matches("cannot accept connections").count(),
        1,
        "said once, not per failure: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_slow_connections_make_room_for_signed_deliveries() {
    let listener = Listener::start(&secret(), &["--max-connections", "64"], None);
    let attack = Attack::start(listener.addr, 200);
    attack.hold(100).await;
    let before = listener.metrics().await;

    let delivered = deliveries_get_through(&listener, &attack, 20).await;

    let after = listener.metrics().await;
    println!(
        "cap 64: {delivered}; {} shed before them, {} in all; {} open",
        before.get(SHED),
        after.get(SHED),
        after.get(OPEN)
    );
    assert_eq!(after.get(VERIFIED), 20);
    assert!(
        after.get(SHED) > before.get(SHED),
        "slow connections were shed to make room"
    );
    // The cap, with the connection that has just been accepted.
    assert!(after.get(OPEN) <= 65, "{} open", after.get(OPEN));
    assert_eq!(after.get(ACCEPT_ERRORS), 0);
}

/// Reads until the receiver closes `stream`; how long that took.
async fn closed_after(mut stream: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("still open after 30 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_bodies_and_idle_connections_are_closed_at_their_deadlines() {
    let listener = Listener::start(
        &secret(),
        &["--header-read-timeout", "1s", "--idle-timeout", "4s"],
        None,
    );
    let started = Instant::now();
    // Headers begun, never finished.
    let mut slow_headers = TcpStream::connect(listener.addr).await.unwrap();
    slow_headers.write_all(HALF_REQUEST).await.unwrap();
    // Headers whole, a tenth of the body.
    let mut slow_body = TcpStream::connect(listener.addr).await.unwrap();
    slow_body
        .write_all(
            b"POST /hooks/mxc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    // Never a byte.
    let silent = TcpStream::connect(listener.addr).await.unwrap();
    // One request answered, then idle.
    let mut kept = TcpStream::connect(listener.addr).await.unwrap();
    kept.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 15];
    kept.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200 OK");
    let answered = Instant::now();

    let (slow_headers, slow_body, silent, kept) = tokio::join!(
        closed_after(slow_headers, started),
        closed_after(slow_body, started),
        closed_after(silent, started),
        closed_after(kept, answered),
    );
    println!("closed after: slow headers {slow_headers:?}, slow body {slow_body:?}, silent {silent:?}, idle after an answer {kept:?}");
    let second = Duration::from_secs(1);
    let idle = Duration::from_secs(4);
    assert!((second..idle).contains(&slow_headers), "{slow_headers:?}");
    assert!((second..idle).contains(&slow_body), "{slow_body:?}");
    assert!(silent >= idle, "{silent:?}");
    assert!(kept >= idle, "{kept:?}");
    assert_eq!(listener.metrics().await.get(TIMED_OUT), 4);
}

#[tokio::test]
async fn signed_bodies_that_are_not_a_json_object_are_refused_with_400_and_counted() {
    let secret = secret();
    let listener = Listener::start(&secret, &[], None);
    let client = fresh_client();
    let url = listener.url();
    for (id, body) in [
        ("evt_not_utf8", b"{\"amount\": \"\xff\xfe\"}".as_slice()),
        ("evt_plain_text", b"declined, see the portal".as_slice()),
        (
            "evt_array",
            b"[{\"type\": \"authorization.declined\"}]".as_slice(),
        ),
        ("evt_empty", b"".as_slice()),
    ] {
        assert_eq!(
            deliver(&client, &url, &secret, id, body).await.unwrap(),
            400,
            "{id}"
        );
    }
    assert_eq!(
        deliver(&client, &url, &secret, "evt_object", &event(1))
            .await
            .unwrap(),
        204
    );
    // Not signed: the signature is checked first.
    let forged = WebhookSecret::generate();
    assert_eq!(
        deliver(&client, &url, &forged, "evt_forged", b"[]")
            .await
            .unwrap(),
        401
    );
    let counts = listener.metrics().await;
    assert_eq!(counts.get(BAD_BODY), 4);
    assert_eq!(counts.get(VERIFIED), 1);
    assert_eq!(counts.get(BAD_SIGNATURE), 1);
    let stderr = listener.stderr.lock().unwrap().clone();
    for line in [
        "refused evt_not_utf8: the body is not UTF-8 (invalid byte at offset 12): a JSON object was expected",
        "refused evt_array: the body is a JSON array, not an object",
        "refused evt_empty: the body is empty: a JSON object was expected",
    ] {
        assert!(stderr.contains(line), "{line:?} not in {stderr}");
    }
    assert!(
        stderr.contains("refused evt_plain_text: the body is not JSON ("),
        "{stderr}"
    );
}
