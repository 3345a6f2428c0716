//! A throwaway PostgreSQL cluster for the tests, started from the installed binaries.
//!
//! One cluster per test process, started on first use; each test gets its own database.
//! `postgres` runs as a child of the test process with a parent-death signal, so it goes
//! away when the tests end, however they end. initdb refuses to run as root, so as root it
//! runs as the `postgres` user (or `nobody`).
//! `STARLING_TEST_PG_URL` (a server URL without a database) uses an existing server instead.
//!
//! The cluster (hundreds of MB) lives in `$TMPDIR/starling-pg-…` and is removed when the
//! test process exits, passed or failed (an `atexit` handler stops postgres, then removes
//! the directory). A run that was killed cannot clean up: the next run removes clusters
//! whose test process is gone, and `test.sh` removes those of its own run on exit
//! (`STARLING_TEST_RUN` puts its id in the directory names).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

struct Cluster {
    base_url: String,
    _child: Option<Child>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(1);
/// What the exit handler removes: the postmaster's pid and the cluster directory.
static POSTGRES_PID: AtomicU32 = AtomicU32::new(0);
static CLUSTER_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
/// The background removal of stale clusters, finished at exit.
static SWEEPER: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);
const PREFIX: &str = "starling-pg-";
/// The file in a cluster directory that names the test process owning it.
const OWNER_FILE: &str = "owner.pid";

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.lines().next()?.trim().parse().ok()
}

/// Remove clusters left by test processes that were killed. A directory is left alone while
/// its owner (or, for directories from before the owner file, its postmaster) runs, and for
/// its first ten minutes when neither can be told.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let stale = match read_pid(&dir.join(OWNER_FILE)) {
            Some(owner) => !alive(owner),
            None => {
                let postmaster = read_pid(&dir.join("data/postmaster.pid"));
                let old = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > Duration::from_secs(600));
                !postmaster.is_some_and(alive) && old
            }
        };
        if stale {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// At process exit, passed or failed: stop postgres (immediate shutdown), wait for it, and
/// remove the cluster directory (and let the removal of stale ones finish).
extern "C" fn remove_cluster_at_exit() {
    let pid = POSTGRES_PID.load(Ordering::SeqCst) as i32;
    if pid > 0 {
        // SAFETY: signalling and reaping our own child process.
        unsafe {
            libc::kill(pid, libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut status = 0;
                let r = libc::waitpid(pid, &mut status, libc::WNOHANG);
                if r != 0 {
                    break;
                }
                if Instant::now() > deadline {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    if let Some(sweeper) = SWEEPER.lock().ok().and_then(|mut s| s.take()) {
        let _ = sweeper.join();
    }
    let dir = CLUSTER_DIR.lock().ok().and_then(|mut d| d.take());
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    for dir in ["/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin"] {
        if Path::new(dir).join("initdb").exists() {
            return PathBuf::from(dir);
        }
    }
    panic!(
        "PostgreSQL binaries (initdb, postgres) were not found. Install them (Debian: apt-get install postgresql-15) \
         or set PG_BINDIR; the PostgreSQL tests are never skipped."
    );
}

/// The uid/gid to run PostgreSQL as: ourselves unless we are root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: getpwnam takes a NUL-terminated name and returns a pointer to static data
        // or null; we only read it immediately.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: non-null, points at a valid passwd struct.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Some((uid, gid));
        }
    }
    panic!("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as");
}

fn command(bin: &Path, who: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(bin);
    if let Some((uid, gid)) = who {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn start() -> Cluster {
    if let Ok(url) = std::env::var("STARLING_TEST_PG_URL") {
        return Cluster { base_url: url.trim_end_matches('/').to_string(), _child: None };
    }
    let bin = bin_dir();
    let who = run_as();
    // In the background: removing a cluster takes a while, and this one's start need not wait.
    *SWEEPER.lock().unwrap() = Some(std::thread::spawn(remove_stale_clusters));
    let prefix = match std::env::var("STARLING_TEST_RUN") {
        Ok(run) => format!("{PREFIX}run{run}-"),
        Err(_) => PREFIX.to_string(),
    };
    let dir = tempfile::Builder::new().prefix(&prefix).tempdir().expect("temp dir").keep();
    std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string()).expect("write the owner file");
    *CLUSTER_DIR.lock().unwrap() = Some(dir.clone());
    // SAFETY: registers a plain function to run at exit.
    unsafe { libc::atexit(remove_cluster_at_exit) };
    let data = dir.join("data");
    if let Some((uid, gid)) = who {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the cluster dir");
    }
    let out = command(&bin.join("initdb"), who)
        .args(["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        .stdout(Stdio::null())
        .output()
        .expect("run initdb");
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = command(&bin.join("postgres"), who);
    cmd.args([
        "-D", data.to_str().unwrap(),
        "-h", "127.0.0.1",
        "-p", &port.to_string(),
        "-k", dir.to_str().unwrap(),
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
        "-c", "max_connections=300",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            // Die with the test process, even on SIGKILL.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    // PR_SET_PDEATHSIG fires when the parent *thread* exits, so postgres is spawned from a
    // thread that lives as long as the test process (test threads come and go).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let child = cmd.spawn();
        let ok = child.is_ok();
        tx.send(child).expect("the starter waits");
        if ok {
            loop {
                std::thread::park();
            }
        }
    });
    let child = rx.recv().unwrap().expect("start postgres");
    POSTGRES_PID.store(child.id(), Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "postgres did not start within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Cluster { base_url: format!("postgres://postgres@127.0.0.1:{port}"), _child: Some(child) }
}

/// A fresh, empty database on the shared cluster; returns its URL.
pub async fn new_database() -> String {
    let cluster = CLUSTER.get_or_init(start);
    let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let admin = format!("{}/postgres", cluster.base_url);
    // The server may still be starting up its accept loop; retry briefly.
    let mut last_error = None;
    for _ in 0..50 {
        match sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&admin).await {
            Ok(pool) => {
                // The name is ours (pid and a counter), not input.
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await.expect("create database");
                pool.close().await;
                return format!("{}/{name}", cluster.base_url);
            }
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to the test PostgreSQL: {last_error:?}");
}
