//! The `herald` commands meant for scripts: results alone on stdout, messages on stderr,
//! non-zero exit on failure.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn herald(dir: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .current_dir(dir)
        .env(
            "HERALD_DATABASE_URL",
            format!("sqlite://{}/h.db", dir.display()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn tokens_and_users_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald(dir.path(), &["token", "create", "deploy-bot"], "");
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(
        token.starts_with("hrld_") && token.trim().len() == 5 + 64,
        "only the token: {token:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown only now"));

    let out = herald(dir.path(), &["token", "list"], "");
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(list.contains("deploy-bot\tmaintainer"));
    assert!(!list.contains(token.trim()), "never the secret");

    let out = herald(dir.path(), &["token", "revoke", "1"], "");
    assert!(out.status.success());
    let out = herald(dir.path(), &["token", "revoke", "1"], "");
    assert!(!out.status.success(), "revoking twice fails");
    assert!(out.stdout.is_empty());

    let out = herald(
        dir.path(),
        &["user", "add", "alice", "--role", "admin"],
        "correct horse battery\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = herald(dir.path(), &["user", "add", "bob"], "short\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12 characters"));
    let out = herald(
        dir.path(),
        &["user", "add", "alice"],
        "correct horse battery\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    let help = herald(dir.path(), &["--help"], "");
    let help = String::from_utf8(help.stdout).unwrap();
    for sub in ["serve", "config", "user", "token"] {
        assert!(help.contains(sub), "{sub}");
    }
}
