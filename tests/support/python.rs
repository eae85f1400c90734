//! The Python clients people use (`tests/python/requirements.txt`), in a
//! virtualenv under `target/` made on first use and reused while the
//! requirements stay the same. Needs `python3` with `venv` and a reachable
//! package index the first time (`.ci/run` warms it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

static READY: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The virtualenv's `python`, made ready once per test binary.
pub fn python() -> PathBuf {
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = &*ready {
        return p.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let requirements = root.join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let venv = root.join("target/test-python");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements));
        std::fs::write(&stamp, &wanted).unwrap();
    }
    *ready = Some(python.clone());
    python
}

/// Runs `tests/python/<script>` with `args`; panics with its output if it
/// fails.
pub fn script(script: &str, args: &[&str]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (the client tests need python3)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed (the client tests need python3 with venv and a package index):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
