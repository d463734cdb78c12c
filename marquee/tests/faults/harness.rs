//! The pieces fault tests are made of: the real `marquee` binary as a child process that can
//! be killed with SIGKILL, private PostgreSQL and NATS servers that can be stopped and wiped
//! without disturbing anything else, and a load of customers booking.

use rand::seq::SliceRandom;
use rand::Rng;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const ADMIN: (&str, &str) = ("faults-admin@marquee.test", "faults-admin-password");

/// Fault tests stop and start processes and servers; they run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the target directory, for logs and server data.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("faults-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} within {} s", within.as_secs());
}

/// One `marquee` process (all roles by default), restartable with the same settings.
pub struct Engine {
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub base: String,
    log: PathBuf,
    child: Option<Child>,
    /// Whether this process's namespace is its own (not a sibling's): its JetStream stream
    /// is then deleted when it is dropped, so the shared NATS does not keep every run's.
    owns_stream: bool,
}

impl Engine {
    /// Settings for a fresh database and NATS namespace on the given servers.
    pub fn new(database_url: &str, nats_url: &str) -> Self {
        let port = free_port();
        let namespace = format!("mqf{}", &Uuid::new_v4().simple().to_string()[..10]);
        let env = [
            ("DATABASE_URL", database_url.to_owned()),
            ("NATS_URL", nats_url.to_owned()),
            ("MARQUEE_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("MARQUEE_NAMESPACE", namespace),
            ("MARQUEE_ADMIN_EMAIL", ADMIN.0.to_owned()),
            ("MARQUEE_ADMIN_PASSWORD", ADMIN.1.to_owned()),
            ("MARQUEE_RATE_LIMITS", "off".to_owned()),
            ("MARQUEE_PAYMENT_LATENCY_MS", "300".to_owned()),
            ("MARQUEE_PAYMENT_TIMEOUT_MS", "1000".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            env,
            args: Vec::new(),
            base: format!("http://127.0.0.1:{port}"),
            log: scratch("engine").join("marquee.log"),
            child: None,
            owns_stream: true,
        }
    }

    /// A second process on the same database and namespace, running `args` (e.g. `projector`).
    pub fn sibling(&self, args: &[&str]) -> Self {
        let port = free_port();
        let mut env = self.env.clone();
        for (k, v) in &mut env {
            if k == "MARQUEE_HTTP_ADDR" {
                *v = format!("127.0.0.1:{port}");
            }
        }
        Self {
            env,
            args: args.iter().map(|a| a.to_string()).collect(),
            base: format!("http://127.0.0.1:{port}"),
            log: scratch("sibling").join("marquee.log"),
            child: None,
            owns_stream: false,
        }
    }

    /// Starts the process (its output goes to a log file, appended across restarts).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_marquee"))
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the marquee binary starts");
        self.child = Some(child);
    }

    /// Starts the process and waits until its API is ready.
    pub async fn start_ready(&mut self) {
        self.start();
        let url = format!("{}/readyz", self.base);
        let client = Client::new();
        let log = self.log.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "marquee exited ({status}); log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "marquee not ready in 60 s; log at {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown code runs, whatever was in flight is cut off.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn database_url(&self) -> &str {
        self.setting("DATABASE_URL")
    }

    fn setting(&self, name: &str) -> &str {
        &self.env.iter().find(|(k, _)| k == name).unwrap().1
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill9();
        if self.owns_stream {
            self.delete_stream();
        }
    }
}

impl Engine {
    /// Deletes the namespace's JetStream stream, if its NATS is still there (a private one
    /// may be gone already, and then so is the stream). Runs on a thread of its own: a drop
    /// may happen inside a test's runtime, which cannot be blocked on.
    fn delete_stream(&self) {
        let url = self.setting("NATS_URL").to_owned();
        let stream = marquee_nats::Namespace::new(self.setting("MARQUEE_NAMESPACE"))
            .unwrap()
            .stream();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let delete = async {
                    let client = async_nats::connect(url).await.ok()?;
                    async_nats::jetstream::new(client)
                        .delete_stream(stream)
                        .await
                        .ok()
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), delete).await;
            })
        })
        .join();
    }
}

/// A PostgreSQL server of the test's own (initdb in a scratch directory, its own port), so
/// it can be restarted mid-load without disturbing anything else.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(args: &[&str]) -> std::process::Output {
    // PostgreSQL refuses to run as root; CI and this machine run tests as root.
    let output = if running_as_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .output()
    } else {
        Command::new(args[0]).args(&args[1..]).output()
    };
    output.expect("PostgreSQL's tools run")
}

/// Runs a PostgreSQL tool as [`as_postgres`] does and fails the test, with the tool's
/// errors, if it did not succeed.
fn as_postgres_ok(what: &str, args: &[&str]) {
    let out = as_postgres(args);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PrivatePostgres {
    pub fn start() -> Self {
        // Under the system's temporary directory, which the postgres user can reach (a
        // checkout under /root may not be).
        let dir =
            std::env::temp_dir().join(format!("marquee-faults-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        if running_as_root() {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
        }
        as_postgres_ok(
            "initdb",
            &[
                &format!("{PG_BIN}/initdb"),
                "-D",
                data.to_str().unwrap(),
                "-U",
                "root",
                "--auth=trust",
                "--no-sync",
            ],
        );
        let pg = Self {
            port: free_port(),
            dir,
        };
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_owned()
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://root@127.0.0.1:{}/{database}", self.port)
    }

    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.to_str().unwrap()
        );
        as_postgres_ok(
            "pg_ctl start",
            &[
                &format!("{PG_BIN}/pg_ctl"),
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                self.dir.join("postgres.log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server the hard way: every connection is cut, nothing waits.
    pub fn down(&self) {
        as_postgres_ok(
            "pg_ctl stop",
            &[
                &format!("{PG_BIN}/pg_ctl"),
                "-D",
                &self.data(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &self.data(),
            "-m",
            "immediate",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A NATS server with JetStream of the test's own, whose storage can be wiped.
pub struct PrivateNats {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    pub fn start() -> Self {
        let mut nats = Self {
            port: free_port(),
            dir: scratch("nats"),
            child: None,
        };
        nats.up();
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn up(&mut self) {
        let port = self.port.to_string();
        let store = self.dir.join("store");
        // On PATH, or where Debian's package puts it (root's PATH may lack /usr/sbin).
        let start = |binary: &str| {
            Command::new(binary)
                .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
                .arg(&store)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let child = start("nats-server")
            .or_else(|_| start("/usr/sbin/nats-server"))
            .expect("nats-server starts");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not listen");
    }

    /// Stops the server and deletes everything it stored.
    pub fn down_and_wipe(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(self.dir.join("store"));
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.down_and_wipe();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the load saw acknowledged (2xx), and what else it saw.
#[derive(Debug, Default)]
pub struct Acked {
    /// (reservation id, customer token)
    pub holds: Vec<(String, String)>,
    /// (ticket id, customer token)
    pub tickets: Vec<(String, String)>,
    /// Status codes of every answer, and `None` for no answer (refused, reset).
    pub statuses: Vec<Option<u16>>,
}

/// A catalog to book: one theater, one movie, `showtimes` showtimes of 10 rows of 10 seats.
pub async fn catalog(base: &str, showtimes: usize) -> Vec<String> {
    let client = Client::new();
    let admin = token(&client, base, ADMIN.0, ADMIN.1).await;
    let layout: Vec<String> = (0..10).map(|_| "s".repeat(10)).collect();
    let theater: Value = client
        .post(format!("{base}/v1/theaters"))
        .bearer_auth(&admin)
        .json(
            &json!({"name": "Faults", "address": "1 Test St", "city": "Testville",
            "location": {"lat": 48.85, "lon": 2.35}, "timezone": "Europe/Paris",
            "screens": [{"name": "One", "layout": layout}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let screen = theater["screens"][0]["id"].as_str().unwrap().to_owned();
    let theater = theater["id"].as_str().unwrap().to_owned();
    let movie: Value = client
        .post(format!("{base}/v1/movies"))
        .bearer_auth(&admin)
        .json(&json!({"title": "Crash Test", "runtime_minutes": 90}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let movie = movie["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..showtimes {
        let starts = chrono::Utc::now()
            + chrono::TimeDelta::days(2)
            + chrono::TimeDelta::hours(3 * i as i64);
        let r: Value = client
            .post(format!("{base}/v1/showtimes"))
            .bearer_auth(&admin)
            .json(
                &json!({"movie_id": movie, "theater_id": theater, "screen_id": screen,
                "starts_at": starts, "prices": {"standard": {"amount": 1200, "currency": "EUR"}}}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["id"].as_str().expect("a showtime").to_owned());
    }
    ids
}

pub async fn token(client: &Client, base: &str, email: &str, password: &str) -> String {
    let r: Value = client
        .post(format!("{base}/v1/auth/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"].as_str().expect("a token").to_owned()
}

/// Registers `n` customers and returns their tokens.
pub async fn customers(base: &str, n: usize) -> Vec<String> {
    let client = Client::new();
    let mut tokens = Vec::new();
    for _ in 0..n {
        let email = format!("c{}@marquee.test", Uuid::new_v4().simple());
        let r = client
            .post(format!("{base}/v1/users"))
            .json(&json!({"email": email, "password": "a long enough password", "name": "C"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        tokens.push(token(&client, base, &email, "a long enough password").await);
    }
    tokens
}

/// Customers holding seats and paying (half of their holds) until `stop` is set, remembering
/// every acknowledged hold and ticket. Errors and refused connections are expected while
/// faults happen; requests time out after 10 s rather than hang.
pub async fn book_until(
    base: String,
    showtimes: Vec<String>,
    tokens: Vec<String>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Acked {
    let acked = Arc::new(Mutex::new(Acked::default()));
    let client = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for token in tokens {
        let (client, base, showtimes, stop, acked) = (
            client.clone(),
            base.clone(),
            showtimes.clone(),
            stop.clone(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (showtime, seats) = {
                    let mut rng = rand::thread_rng();
                    let showtime = showtimes.choose(&mut rng).unwrap().clone();
                    let row = (b'A' + rng.gen_range(0..10)) as char;
                    let n = rng.gen_range(1..=2);
                    let first = rng.gen_range(1..=9);
                    let seats: Vec<String> = (first..first + n).map(|c| format!("{row}{c}")).collect();
                    (showtime, seats)
                };
                let r = client
                    .post(format!("{base}/v1/reservations"))
                    .bearer_auth(&token)
                    .json(&json!({"showtime_id": showtime, "seats": seats}))
                    .send()
                    .await;
                let Some(body) = record(&acked, r).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let hold = body["id"].as_str().unwrap().to_owned();
                acked.lock().unwrap().holds.push((hold.clone(), token.clone()));
                if rand::random::<bool>() {
                    let r = client
                        .post(format!("{base}/v1/tickets"))
                        .bearer_auth(&token)
                        .json(&json!({"reservation_id": hold, "payment": {"card_number": "4242424242424242"}}))
                        .send()
                        .await;
                    if let Some(body) = record(&acked, r).await {
                        let mut acked = acked.lock().unwrap();
                        for t in body["tickets"].as_array().unwrap() {
                            acked.tickets.push((t["id"].as_str().unwrap().to_owned(), token.clone()));
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

/// Notes the answer's status; returns its body when it is a 2xx.
async fn record(acked: &Mutex<Acked>, r: reqwest::Result<reqwest::Response>) -> Option<Value> {
    match r {
        Ok(r) => {
            let status = r.status();
            acked.lock().unwrap().statuses.push(Some(status.as_u16()));
            if status.is_success() {
                r.json().await.ok()
            } else {
                None
            }
        }
        Err(_) => {
            acked.lock().unwrap().statuses.push(None);
            None
        }
    }
}

/// Every acknowledged hold and ticket is still there, each seen by its owner.
pub async fn assert_acked_kept(base: &str, acked: &Acked) {
    let client = Client::new();
    for (hold, token) in &acked.holds {
        let r = client
            .get(format!("{base}/v1/reservations/{hold}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "acknowledged hold {hold} is lost"
        );
    }
    for (ticket, token) in &acked.tickets {
        let r: Value = client
            .get(format!("{base}/v1/tickets/{ticket}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            r["status"], "valid",
            "acknowledged ticket {ticket} is lost: {r}"
        );
    }
}

/// The invariant checker finds nothing, with reconciliation done and the read models equal
/// to a rebuild.
pub async fn assert_invariants(database_url: &str) {
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    eventually(
        "payments and refunds were not reconciled",
        Duration::from_secs(30),
        || async {
            let open: i64 = sqlx::query_scalar(
            "select (select count(*) from payments_in_flight) + (select count(*) from refunds_due)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
            open == 0
        },
    )
    .await;
    let findings = marquee::check::check(&pool, Some(Duration::from_secs(60)), &|_, _| {})
        .await
        .unwrap();
    assert_eq!(findings.violations, Vec::<String>::new());
    assert!(findings.read_models_checked);
    assert_eq!(findings.unknown_to_processor, 0);
    pool.close().await;
}
