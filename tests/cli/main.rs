//! The `portcullis` binary as an operator runs it: `check`, `run`, `explain`,
//! `audit verify` and `dev`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

#[path = "../support/mod.rs"]
mod support;

mod audit_verify;
mod check;
mod dev;
mod explain;
mod run;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

fn portcullis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// Writes `text` to a fresh config file and runs `portcullis check` on it.
fn check_text(text: &str) -> std::process::Output {
    let dir = temp_dir();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    portcullis()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

/// Spawns the binary with stdout or stderr piped, and streams its lines.
fn spawn_lines(
    command: &mut Command,
    stderr: bool,
) -> (KillOnDrop, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let mut child = if stderr {
        command.stderr(Stdio::piped()).spawn().unwrap()
    } else {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let stream: Box<dyn std::io::Read + Send> = if stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (KillOnDrop(child), rx)
}

/// Kills the child if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}
