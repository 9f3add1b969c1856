//! A `redis-server` owned by a test (Debian's package; `.ci/run` installs it), on a free
//! loopback port that a restart reuses. Outside CI a missing `redis-server` makes `start` return
//! `None` (the test skips with a message); with CI set it fails the test.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{eventually_async, free_port, temp_dir};

const DEADLINE: Duration = Duration::from_secs(30);

pub struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    /// A persistent (AOF, fsync always) Redis on a free port; `None` outside CI when
    /// `redis-server` is not installed.
    pub async fn start(label: &str) -> Option<Redis> {
        if let Err(error) = Command::new("redis-server").arg("--version").output() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install redis-server (Debian's redis-server package; see .ci/run): {error}"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let mut redis = Redis {
            port: free_port(),
            dir: temp_dir(label),
            child: None,
        };
        redis.spawn().await;
        Some(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--maxmemory-policy", "noeviction", "--protected-mode", "no"])
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = self.addr();
        let up = eventually_async(DEADLINE, || async move { ping(addr).await }).await;
        assert!(up, "redis-server did not start on {addr}");
    }

    /// SIGKILL: no shutdown save, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// Deletes the persisted data, so the next start is empty (a Redis without persistence).
    pub fn wipe(&self) {
        for entry in std::fs::read_dir(&self.dir).unwrap().map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else if path.extension().is_some_and(|e| e == "rdb") {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
    )
}
