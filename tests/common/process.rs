//! Child processes with deadlines, shared by the tests (`tests/common`) and the benchmarks
//! (`benches/common`, by path): nothing a test or a benchmark starts may hang it.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Waits for `child` at most `limit`; `None` if it was still running and has been killed.
fn wait_until(child: &mut Child, limit: Duration, what: &str) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait(); // SIGKILL: the kernel reaps it at once
                return None;
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    }
}

/// Waits for `child` at most `limit`; past it, kills it and panics saying it waited for
/// `what`.
pub fn wait_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    wait_until(child, limit, what).unwrap_or_else(|| {
        panic!("waited {limit:?} for {what}; it was still running, so it was killed")
    })
}

/// Runs `cmd` like `Command::output` (`what` names it, and the package it comes from), for at
/// most `limit`: past it, kills it and panics with `what` and the end of its stderr.
pub fn output_within(cmd: &mut Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    // Read both pipes while waiting: a child blocked on a full pipe would never end.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            let _ = tx.send(v);
        });
        rx
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let status = wait_until(&mut child, limit, what);
    // A grandchild could hold the pipes open after the child ends: do not wait for it.
    let collect =
        |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    let Some(status) = status else {
        let err = collect(stderr);
        let tail = String::from_utf8_lossy(&err[err.len().saturating_sub(2000)..]).into_owned();
        panic!(
            "{what} did not finish within {limit:?}, so it was killed; its stderr ended with:\n{tail}"
        );
    };
    Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    }
}

/// A child process killed (SIGKILL) and reaped when dropped: a test that fails before it
/// stops its child leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
