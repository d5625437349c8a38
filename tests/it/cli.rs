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
            crate::common::database_url(dir, "h.db"),
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

/// The database `herald serve` would have made.
fn served_database(dir: &std::path::Path) {
    let url = crate::common::database_url(dir, "h.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use herald::store::Store as _;
        let store = herald::store::SqlStore::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
    });
}

/// Commands other than `serve` never make a database: a token printed for a new, empty one
/// would be a token the server does not know.
#[test]
fn commands_do_not_make_a_database() {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var("HERALD_TEST_POSTGRES").is_ok() {
        // Each test's PostgreSQL database is made for it; the file case is what matters.
        return;
    }
    for args in [
        &["token", "create", "deploy-bot"][..],
        &["token", "list"],
        &["user", "role", "alice", "admin"],
        &["db", "backup", "b.db"],
    ] {
        let out = herald(dir.path(), args, "");
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed something");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("there is no database at") && err.contains("HERALD_DATABASE_URL"),
            "{args:?}: {err}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing made: {left:?}");
}

#[test]
fn tokens_and_users_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    served_database(dir.path());
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

/// `herald user remove|passwd|role`: each ends that user's sessions at once; the last admin
/// can be neither removed nor demoted.
#[tokio::test]
async fn user_remove_passwd_and_role_end_sessions_and_keep_an_admin() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::database_url(dir.path(), "h.db");
    let store = herald::store::SqlStore::connect(&url).await.unwrap();
    herald::store::Store::migrate(&store).await.unwrap();
    let service = herald::service::Service::new(Arc::new(store));
    let role = herald::domain::Role::Admin;
    let alice = service
        .add_user("alice", "correct horse battery", role)
        .await
        .unwrap();
    let bob = service
        .add_user(
            "bob",
            "correct horse battery",
            herald::domain::Role::Maintainer,
        )
        .await
        .unwrap();
    let signed_in = |user: herald::domain::User| {
        let service = service.clone();
        async move {
            service
                .open_session(user)
                .await
                .unwrap()
                .cookie
                .expose()
                .to_owned()
        }
    };
    let run = |args: Vec<&'static str>, stdin: &'static str| {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || herald(&dir, &args, stdin))
    };

    let bob_session = signed_in(bob.clone()).await;
    let out = run(vec!["user", "passwd", "bob"], "another long password\n")
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        service.session(&bob_session).await.unwrap().is_none(),
        "passwd ends sessions"
    );
    assert!(
        service
            .verify_user("bob", "another long password")
            .await
            .unwrap()
            .is_some()
    );

    let bob_session = signed_in(bob.clone()).await;
    let out = run(vec!["user", "role", "bob", "admin"], "").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        service.session(&bob_session).await.unwrap().is_none(),
        "role ends sessions"
    );

    // Two admins now: one may go; then the other is the last and stays.
    let alice_session = signed_in(alice.clone()).await;
    let out = run(vec!["user", "remove", "alice"], "").await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        service.session(&alice_session).await.unwrap().is_none(),
        "remove ends sessions"
    );
    let out = run(vec!["user", "remove", "bob"], "").await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(vec!["user", "role", "bob", "maintainer"], "")
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("last admin"));
    let out = run(vec!["user", "remove", "nobody"], "").await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert!(out.stdout.is_empty());
}

/// Logs written to a pipe (a file, journald) carry no colour codes; every change is an INFO
/// line naming who made it; a refused token and a failed sign-in are logged; PostgreSQL's
/// start-up notices are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_and_say_who_changed_what() {
    let dir = tempfile::tempdir().unwrap();
    let url = crate::common::database_url(dir.path(), "h.db");
    let port = crate::common::free_port();
    let init = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["db", "init"])
        .env("HERALD_CONFIG", "/dev/null")
        .env("HERALD_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(init.status.success());
    let token = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["token", "create", "deploy-bot"])
        .env("HERALD_CONFIG", "/dev/null")
        .env("HERALD_DATABASE_URL", &url)
        .output()
        .unwrap();
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let log = dir.path().join("herald.log");
    let child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .current_dir(dir.path())
        .env("HERALD_CONFIG", "/dev/null")
        .env("HERALD_DATABASE_URL", &url)
        .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
        .env("HERALD_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(std::time::Instant::now() < deadline, "herald did not start");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let created = client
        .post(format!("{base}/api/v1/maintenances"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"title": "Database cluster migration"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let refused = client
        .get(format!("{base}/api/v1/maintenances"))
        .bearer_auth("hrld_0000000000000000000000000000000000000000000000000000000000000000")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let failed = client
        .post(format!("{base}/admin/login"))
        .form(&[("name", "mallory"), ("password", "guess guess guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 401);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "escape codes in a file:\n{text}");
    assert!(
        text.lines().any(|l| l.contains(" INFO ")
            && l.contains("action=window.create")
            && l.contains("actor=token:deploy-bot")),
        "{text}"
    );
    assert!(
        text.contains("refused an unknown or revoked API token"),
        "{text}"
    );
    assert!(
        text.contains("sign-in failed") && text.contains("mallory"),
        "{text}"
    );
    assert!(!text.contains("_sqlx_migrations"), "{text}");
}

/// `herald config show` prints TOML that `--config` accepts and that means the same settings;
/// secrets are never printed.
#[test]
fn config_show_prints_a_file_config_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let show = |envs: &[(&str, &str)], config: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["config", "show"])
            .current_dir(dir.path())
            .env("HERALD_CONFIG", config);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = show(
        &[
            ("HERALD_SITE_NAME", "DecAPI status"),
            ("HERALD_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ("HERALD_SHUTDOWN_DELAY", "5s"),
            ("HERALD_DATABASE_URL", "postgres://herald:hunter2@db/herald"),
            ("HERALD_BLUESKY_APP_PASSWORD", "abcd-efgh-ijkl-mnop"),
            ("HERALD_BLUESKY_IDENTIFIER", "decapi.me"),
        ],
        "/dev/null",
    );
    assert!(
        !first.contains("hunter2") && !first.contains("abcd-efgh"),
        "{first}"
    );
    assert!(
        first.contains("HERALD_BLUESKY_APP_PASSWORD is set"),
        "{first}"
    );
    let parsed: toml::Table = first.parse().expect("it is TOML");
    assert_eq!(parsed["site_name"].as_str(), Some("DecAPI status"));
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, &first).unwrap();
    // Secrets still come from the environment.
    let again = show(
        &[("HERALD_BLUESKY_APP_PASSWORD", "abcd-efgh-ijkl-mnop")],
        file.to_str().unwrap(),
    );
    let body = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        body(&again),
        body(&first),
        "the file means the same settings"
    );
}

/// Each command's help lists the settings it uses, not every server flag.
#[test]
fn help_lists_the_settings_a_command_uses() {
    let dir = tempfile::tempdir().unwrap();
    let help = |args: &[&str]| {
        let out = herald(dir.path(), args, "");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let serve = help(&["serve", "--help"]);
    for flag in [
        "--listen",
        "--public-url",
        "--database-url",
        "--shutdown-delay",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}");
    }
    let copy = help(&["db", "copy", "--help"]);
    for flag in [
        "--listen",
        "--public-url",
        "--database-url",
        "--config",
        "--site-name",
    ] {
        assert!(!copy.contains(flag), "db copy --help has {flag}:\n{copy}");
    }
    assert!(copy.contains("--from") && copy.contains("--replace"));
    let token = help(&["token", "create", "--help"]);
    assert!(token.contains("--database-url") && token.contains("--config"));
    assert!(!token.contains("--listen") && !token.contains("--discord"));
    let report = help(&["report", "--help"]);
    assert!(report.contains("--url") && !report.contains("--database-url"));
    assert!(help(&["healthcheck", "--help"]).contains("--listen"));
    // The flags still work in either position.
    let out = herald(
        dir.path(),
        &[
            "token",
            "list",
            "--listen",
            "127.0.0.1:9",
            "--database-url",
            "sqlite://missing.db",
        ],
        "",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot use the database sqlite://missing.db"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The database holds password hashes and channel secrets: its folder, file and WAL are its
/// owner's only, whatever the umask, and a file left readable by others is narrowed.
#[test]
fn the_database_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    if std::env::var("HERALD_TEST_POSTGRES").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["db", "init"])
        .current_dir(dir.path())
        .env("HERALD_DATABASE_URL", "sqlite://state/herald.db")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = dir.path().join("state/herald.db");
    assert_eq!(mode(&dir.path().join("state")), 0o700);
    assert_eq!(mode(&db), 0o600);
    // Written to while open, as the server does: the WAL takes the file's permissions.
    let url = format!("sqlite://{}", db.display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = herald::store::SqlStore::connect(&url).await.unwrap();
        let service = herald::service::Service::new(std::sync::Arc::new(store))
            .acting(herald::domain::Actor::Cli);
        service
            .create_token("deploy", herald::domain::Role::Maintainer)
            .await
            .unwrap();
        let wal = dir.path().join("state/herald.db-wal");
        assert!(wal.exists());
        assert_eq!(mode(&wal), 0o600);
    });
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["db", "init"])
        .current_dir(dir.path())
        .env("HERALD_DATABASE_URL", "sqlite://state/herald.db")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(mode(&db), 0o600);
}

/// `herald subscribers import` reads another status page's CSV export (quoted fields,
/// international addresses), all rows or none, confirming only when told; `export` writes
/// what `import` reads.
#[test]
fn subscribers_import_and_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    served_database(dir.path());
    let url = crate::common::database_url(dir.path(), "h.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = herald::store::SqlStore::connect(&url).await.unwrap();
        for (slug, name) in [("api", "API"), ("web", "Web")] {
            use herald::store::Windows as _;
            store
                .create_component(
                    &herald::domain::NewComponent {
                        slug: slug.into(),
                        name: name.into(),
                        description: None,
                        group_name: None,
                    },
                    jiff::Timestamp::now(),
                )
                .await
                .unwrap();
        }
    });
    let csv = "email,components,kinds,confirmed\n\
               ada@example.com,api,\"incidents;maintenance\",true\n\
               \"Jörg <not a name>\"@bücher.example,,,\n";
    // A wrong line: nothing imported, every wrong line named.
    let out = herald(dir.path(), &["subscribers", "import", "-"], csv);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing was imported") && err.contains("line 3"),
        "{err}"
    );
    let csv = "email,components,kinds,confirmed\n\
               ada@example.com,api,\"incidents;maintenance\",true\n\
               jörg@bücher.example,,,\n\
               grace@example.org,\"api, web\",rollouts,false\n";
    std::fs::write(dir.path().join("subs.csv"), csv).unwrap();
    let out = herald(dir.path(), &["subscribers", "import", "subs.csv"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 added, 0 updated, 0 confirmed"), "{err}");
    // Again with --confirmed: the same addresses (ADA spelt otherwise) updated and confirmed,
    // except the row saying false.
    let csv = csv.replace("ada@example.com", "ADA@Example.com");
    let out = herald(
        dir.path(),
        &["subscribers", "import", "--confirmed", "-"],
        &csv,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0 added, 3 updated, 2 confirmed"), "{err}");

    let out = herald(dir.path(), &["subscribers", "export"], "");
    assert!(out.status.success());
    let exported = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        exported,
        "email,components,kinds,confirmed\n\
         ada@example.com,api,maintenance;incidents,true\n\
         jörg@bücher.example,,maintenance;reminders;incidents;rollouts,true\n\
         grace@example.org,api;web,rollouts,false\n"
    );
    // What export wrote, import reads: nothing changes.
    let out = herald(
        dir.path(),
        &["subscribers", "import", "--confirmed", "-"],
        &exported,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 added, 3 updated"));
    let again = herald(dir.path(), &["subscribers", "export"], "");
    assert_eq!(String::from_utf8(again.stdout).unwrap(), exported);
}
