//! Running the `latchkey` binary itself.

use super::*;

/// Runs the `latchkey` binary with `args` against `db` (its URL and the
/// test key, nothing else from this process's environment).
pub async fn run_cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    run_cli_with(db, args, &[]).await
}

/// [`run_cli`] with more environment variables.
pub async fn run_cli_with(
    db: &TestDb,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LATCHKEY_DATABASE_URL", &db.url)
        .env("LATCHKEY_HMAC_KEY", HMAC_KEY)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .await
        .expect("run the latchkey binary")
}

/// The latchkey binary, run after `wrapper` (such as `prlimit --nofile=64
/// --`), set up to serve `db` on free ports with the test key and JSON logs
/// on stderr (piped), and nothing else from this process's environment.
pub fn server_command(db: &TestDb, wrapper: &[&str]) -> std::process::Command {
    let binary = env!("CARGO_BIN_EXE_latchkey");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => std::process::Command::new(binary),
    };
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LATCHKEY_LISTEN_ADDR", "127.0.0.1:0")
        .env("LATCHKEY_METRICS_ADDR", "127.0.0.1:0")
        .env("LATCHKEY_DATABASE_URL", &db.url)
        .env("LATCHKEY_HMAC_KEY", HMAC_KEY)
        .env("LATCHKEY_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    command
}

/// Runs a client command of the `latchkey` binary against `app` (its
/// address and the admin credential in `LATCHKEY_ADDR` and
/// `LATCHKEY_TOKEN`, nothing else from this process's environment), with
/// `stdin` as its input.
pub async fn run_client(app: &TestApp, args: &[&str], stdin: &[u8]) -> ClientRun {
    run_client_with(
        args,
        stdin,
        &[
            ("LATCHKEY_ADDR", &format!("http://{}", app.addr)),
            ("LATCHKEY_TOKEN", ADMIN_TOKEN),
        ],
    )
    .await
}

/// A client command with only `env` for its environment.
pub async fn run_client_with(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> ClientRun {
    run_client_in(env!("CARGO_BIN_EXE_latchkey"), args, stdin, env).await
}

/// `program` with `args`, `stdin` and only `env` for its environment (a
/// wrapper that runs the binary, such as `script` for a terminal).
pub async fn run_client_in(
    program: &str,
    args: &[&str],
    stdin: &[u8],
    env: &[(&str, &str)],
) -> ClientRun {
    use tokio::io::AsyncWriteExt as _;

    let mut child = tokio::process::Command::new(program)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the latchkey binary");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    let output = child.wait_with_output().await.unwrap();
    ClientRun {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// What a client command printed, and its exit status.
#[derive(Debug)]
pub struct ClientRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    /// Asserts exit status 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        &self.stdout
    }

    /// Asserts exit status `code` and returns stderr.
    #[track_caller]
    pub fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{self:#?}");
        &self.stderr
    }

    /// stdout as JSON, parsed by `jq` (which must be installed) and then
    /// by serde.
    pub fn jq(&self, filter: &str) -> serde_json::Value {
        let mut jq = std::process::Command::new("jq")
            .args(["-c", filter])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("jq is installed (Debian package jq)");
        use std::io::Write as _;
        jq.stdin
            .take()
            .unwrap()
            .write_all(self.stdout.as_bytes())
            .unwrap();
        let out = jq.wait_with_output().unwrap();
        assert!(out.status.success(), "jq could not parse: {}", self.stdout);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}
