//! `herald db copy` and `herald db backup`: the demo data SQLite → PostgreSQL → SQLite comes
//! back identical, a non-empty target is refused, and a backup taken while writes go on is a
//! consistent database.

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use herald::config::Settings;
use herald::domain::{
    ChannelKind, ChannelSecret, DEFAULT_EVENTS, Impact, NewChannel, NewMaintenance, NewStep, Role,
    Schedule,
};
use herald::store::{Outbox as _, SqlStore, Store as _, Windows as _};
use sqlx::{Connection, Row};

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD_CONFIG", "/dev/null")
        .output()
        .unwrap()
}

/// Every table of a SQLite database but sqlx's own, each row as one line of quoted values.
async fn dump(url: &str) -> Vec<(String, Vec<String>)> {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' \
         AND name NOT LIKE 'sqlite%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut out = Vec::new();
    for table in tables {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                .bind(&table)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let row = columns
            .iter()
            .map(|c| format!("quote({c})"))
            .collect::<Vec<_>>()
            .join(" || ',' || ");
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT {row} FROM {table} ORDER BY 1"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
        out.push((table, rows));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trips_the_demo_sqlite_postgres_sqlite() {
    let pg = crate::common::PostgresServer::get();
    let dir = tempfile::tempdir().unwrap();
    let a = format!("sqlite://{}/a.db", dir.path().display());
    let b = format!("sqlite://{}/b.db", dir.path().display());
    let middle =
        crate::common::postgres_database(&pg.url, &format!("{}/middle", dir.path().display()));

    // The demo, with what a running Herald adds: a user, a token, a channel with a Bluesky
    // session, deliveries (one sent, with its remote id) and the audit log.
    {
        let state = herald::server::build(&Settings::for_database(&a), false)
            .await
            .unwrap();
        let service = &state.service.acting(herald::domain::Actor::System);
        let channel = service
            .create_channel(NewChannel {
                name: "Bluesky".into(),
                kind: Some(ChannelKind::Bluesky),
                target: "status.decapi.me".into(),
                secret: ChannelSecret::new("app-password"),
                events: DEFAULT_EVENTS.to_vec(),
                langs: vec!["en".into()],
                enabled: true,
                ..NewChannel::default()
            })
            .await
            .unwrap();
        herald::demo::seed(service).await.unwrap();
        service
            .add_user("ops", "correct horse battery staple", Role::Admin)
            .await
            .unwrap();
        service
            .create_token("deploy", Role::Maintainer)
            .await
            .unwrap();
        let store = service.store();
        store
            .set_channel_session(channel.id, Some(r#"{"accessJwt":"a","refreshJwt":"r"}"#))
            .await
            .unwrap();
        let now = jiff::Timestamp::now();
        let d = store
            .claim_delivery(channel.id, "test", i64::MAX / 2, i64::MAX / 2 + 1)
            .await
            .unwrap()
            .expect("the demo's announcements wait for the channel");
        store
            .delivery_sent(
                d.id,
                d.attempts,
                Some("at://did:plc:decapi/app.bsky.feed.post/3kabc"),
                None,
                None,
                now,
            )
            .await
            .unwrap();
    }
    let original = dump(&a).await;
    let rows = |name: &str| {
        original
            .iter()
            .find(|(t, _)| t == name)
            .map_or(0, |(_, r)| r.len())
    };
    for table in [
        "maintenances",
        "steps",
        "updates",
        "rollouts",
        "rollout_targets",
        "deliveries",
        "users",
        "api_tokens",
        "channels",
        "audit_log",
    ] {
        assert!(rows(table) > 0, "the demo has {table}");
    }

    let out = herald(&["db", "copy", "--from", &a, "--to", &middle]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(
        report.contains(&format!("maintenances\t{}", rows("maintenances"))),
        "{report}"
    );
    assert!(
        report.contains(&format!("deliveries\t{}", rows("deliveries"))),
        "{report}"
    );

    // The copy on PostgreSQL serves: new rows get new ids after the copied ones.
    {
        let store = SqlStore::connect(&middle).await.unwrap();
        let m = store
            .create_maintenance(
                &NewMaintenance {
                    title: "After the move".into(),
                    description: String::new(),
                    impact: Impact::None,
                    schedule: Schedule::Tentative { hint: None },
                    component_ids: vec![],
                    steps: vec![NewStep {
                        title: "One".into(),
                        description: None,
                    }],
                    automation: Default::default(),
                },
                jiff::Timestamp::now(),
                &|id| herald::domain::NewAudit {
                    actor: "test".into(),
                    action: "window.create".into(),
                    target: Some(format!("window {id}")),
                    at: jiff::Timestamp::now(),
                },
            )
            .await
            .unwrap();
        assert_eq!(m.id as usize, rows("maintenances") + 1);
        let session = store.channel_session(1).await.unwrap();
        assert_eq!(
            session.as_deref(),
            Some(r#"{"accessJwt":"a","refreshJwt":"r"}"#)
        );
        // Put it back as it was, for the way home.
        let mut conn = sqlx::PgConnection::connect(&middle).await.unwrap();
        for sql in [
            "DELETE FROM steps WHERE maintenance_id = $1",
            "DELETE FROM maintenances WHERE id = $1",
            "DELETE FROM audit_log WHERE target = 'window ' || $1",
        ] {
            sqlx::query(sql)
                .bind(m.id)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }

    // A target that holds data is refused, and left as it was.
    let out = herald(&["db", "copy", "--from", &middle, "--to", &a]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--replace"), "{err}");
    assert_eq!(dump(&a).await, original);

    let out = herald(&["db", "copy", "--from", &middle, "--to", &b]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        dump(&b).await,
        original,
        "SQLite → PostgreSQL → SQLite is the same"
    );

    // --replace empties the target first.
    let out = herald(&["db", "copy", "--from", &a, "--to", &b, "--replace"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dump(&b).await, original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_writes_go_on_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let state = herald::server::build(&Settings::for_database(&url), false)
        .await
        .unwrap();
    let service = state.service.acting(herald::domain::Actor::System);
    let stop = Arc::new(AtomicBool::new(false));
    // Windows of three steps each, one after the other, as fast as they commit.
    let writer = tokio::spawn({
        let (service, stop) = (service.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                service
                    .create_maintenance(NewMaintenance {
                        title: format!("Window {n}"),
                        description: String::new(),
                        impact: Impact::None,
                        schedule: Schedule::Tentative { hint: None },
                        component_ids: vec![],
                        steps: (1..=3)
                            .map(|i| NewStep {
                                title: format!("Step {i}"),
                                description: None,
                            })
                            .collect(),
                        automation: Default::default(),
                    })
                    .await
                    .unwrap();
            }
            n
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let backup = dir.path().join("backup.db");
    let path = backup.to_str().unwrap();
    let out = tokio::task::spawn_blocking({
        let (url, path) = (url.clone(), path.to_owned());
        move || {
            Command::new(env!("CARGO_BIN_EXE_herald"))
                .args(["db", "backup", &path])
                .env("HERALD_CONFIG", "/dev/null")
                .env("HERALD_DATABASE_URL", url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let windows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM maintenances")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(
        windows > 0 && windows < written,
        "{windows} of {written}: taken mid-way"
    );
    // Each window came with its three steps: the copy is one moment, never half a commit.
    let row = sqlx::query(
        "SELECT COUNT(*) FROM maintenances m WHERE (SELECT COUNT(*) FROM steps s \
         WHERE s.maintenance_id = m.id) <> 3",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(row.get::<i64, _>(0), 0);
    // The backup opens as a Herald database.
    let store = SqlStore::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.count_maintenances().await.unwrap(), windows);

    // It never overwrites.
    let again = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["db", "backup", path])
        .env("HERALD_CONFIG", "/dev/null")
        .env("HERALD_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// A copy's source must exist and hold Herald's tables, and is only read: a mistyped path, a
/// file of something else, or an empty source never empties the target, and a backup read
/// by a copy stays byte for byte as it was, with nothing beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_never_reads_what_is_not_a_herald_database_and_never_changes_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let live = format!("sqlite://{}/live.db", dir.path().display());
    let state = herald::server::build(&Settings::for_database(&live), true)
        .await
        .unwrap();
    drop(state);
    let original = dump(&live).await;
    assert!(!original.is_empty());

    // A typo in the source's path: refused, nothing made there, the target as it was.
    let typo = format!("sqlite://{}/lvie.db", dir.path().display());
    let out = herald(&["db", "copy", "--from", &typo, "--to", &live, "--replace"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("there is no database at"), "{err}");
    assert!(
        !dir.path().join("lvie.db").exists(),
        "no database made at the typo"
    );
    assert_eq!(dump(&live).await, original);

    // A SQLite file that is not Herald's.
    let other = dir.path().join("other.db");
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", other.display()))
            .await
            .unwrap();
    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let out = herald(&[
        "db",
        "copy",
        "--from",
        &format!("sqlite://{}", other.display()),
        "--to",
        &live,
        "--replace",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no Herald database"), "{err}");
    assert_eq!(dump(&live).await, original);

    // A backup is read, never written: same bytes, no -wal or -shm beside it.
    let backup = dir.path().join("backup.db");
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["db", "backup", backup.to_str().unwrap()])
        .env("HERALD_CONFIG", "/dev/null")
        .env("HERALD_DATABASE_URL", &live)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&backup).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a backup is its owner's only");
    }
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing(dir.path());
    let restored = format!("sqlite://{}/restored.db", dir.path().display());
    let out = herald(&[
        "db",
        "copy",
        "--from",
        &format!("sqlite://{}", backup.display()),
        "--to",
        &restored,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        bytes,
        "the backup is unchanged"
    );
    let after: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|n| !n.starts_with("restored.db"))
        .collect();
    assert_eq!(after, before, "nothing beside the backup");
    assert_eq!(dump(&restored).await, original);

    // An empty source with --replace would only empty the target: refused unless said.
    let empty = format!("sqlite://{}/empty.db", dir.path().display());
    {
        let store = SqlStore::connect(&empty).await.unwrap();
        store.migrate().await.unwrap();
    }
    let out = herald(&[
        "db",
        "copy",
        "--from",
        &empty,
        "--to",
        &restored,
        "--replace",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--empty-source"), "{err}");
    assert!(
        err.contains("holds are deleted before the copy"),
        "the rows to delete are said: {err}"
    );
    assert_eq!(dump(&restored).await, original);
    let out = herald(&[
        "db",
        "copy",
        "--from",
        &empty,
        "--to",
        &restored,
        "--replace",
        "--empty-source",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dump(&restored)
            .await
            .iter()
            .all(|(_, rows)| rows.is_empty())
    );
}
