//! A real `redis-server` per test, on a free port of 127.0.0.1, in a
//! throwaway directory, killed (and the directory removed) when the guard
//! drops, also when the test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the server binary is: `$MULPROC_REDIS_SERVER`, else
/// `redis-server` on `PATH`.
pub const SERVER_VAR: &str = "MULPROC_REDIS_SERVER";

fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(SERVER_VAR) {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("redis-server"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "redis-server not found on PATH: these tests need a real Redis server. \
             Install the Debian package `redis-server` (apt-get install -y redis-server) \
             or point ${SERVER_VAR} at the binary."
        )
    })
}

/// A unique name per test run and call.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running `redis-server`.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    pub password: Option<String>,
}

impl Server {
    /// A server without persistence.
    pub fn start() -> Server {
        Server::start_with(&["--save", "", "--appendonly", "no"], None)
    }

    /// A server with AOF and `appendfsync always`.
    pub fn start_aof_always() -> Server {
        Server::start_with(
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            None,
        )
    }

    /// A server that wants `password`.
    pub fn start_with_password(password: &str) -> Server {
        Server::start_with(&["--save", "", "--appendonly", "no"], Some(password))
    }

    pub fn start_with(args: &[&str], password: Option<&str>) -> Server {
        let dir = std::env::temp_dir().join(unique("mulproc-redis-test"));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut s = Server {
            child: None,
            port: 0,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            password: password.map(str::to_owned),
        };
        let mut last = String::new();
        for _ in 0..10 {
            s.port = free_port();
            match s.spawn() {
                Ok(()) => return s,
                // Another process took the port between our probe and
                // the server's bind: pick another.
                Err(e) => last = e,
            }
        }
        panic!("could not start redis-server: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(server_binary());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--daemonize")
            .arg("no")
            .arg("--protected-mode")
            .arg("no")
            .arg("--logfile")
            .arg("")
            .args(&self.args);
        if let Some(p) = &self.password {
            cmd.arg("--requirepass").arg(p);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", server_binary()))?;
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            let mut log = String::new();
            let mut told = false;
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                log.push_str(&line);
                if !told && line.contains("Ready to accept connections") {
                    let _ = tx.send(Ok(()));
                    told = true;
                }
                line.clear();
            }
            if !told {
                let _ = tx.send(Err(log));
            }
            // Keep draining until the server exits.
            let _ = r.read_to_string(&mut String::new());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {
                self.child = Some(child);
                Ok(())
            }
            Ok(Err(log)) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(log)
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("redis-server did not get ready in 20 s".into())
            }
        }
    }

    /// `redis://127.0.0.1:<port>/`, with the password if any.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// A plain client connection, for poking at keys directly.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("url")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to the test server")
    }

    /// SIGKILLs the server (no chance to save anything).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and directory (the port
    /// was ours a moment ago; retried for a while if the kernel still
    /// holds it).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("could not restart redis-server on port {}: {e}", self.port),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Child processes killed (and reaped) when dropped, so that a failing
/// test leaves none behind.
#[derive(Debug, Default)]
pub struct Reaper(pub Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}
