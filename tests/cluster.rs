//! The throwaway-cluster harness itself: it starts a usable, SCRAM-only PostgreSQL and leaves
//! nothing behind, neither after a normal drop nor when its owner is SIGKILLed.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pglease::dev::cluster::{Cluster, ClusterOptions};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// Set in the child process of `killed_owner_leaves_nothing_behind`.
const CHILD_ENV: &str = "PGLEASE_TEST_CLUSTER_CHILD";

fn start(max_connections: u32) -> Cluster {
    Cluster::start(ClusterOptions {
        max_connections,
        ..ClusterOptions::default()
    })
    .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"))
}

/// True once the directory is gone and nothing accepts connections on the port.
fn wait_until_gone(root: &Path, port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !root.exists() && TcpStream::connect(("127.0.0.1", port)).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn root_of(cluster: &Cluster) -> PathBuf {
    cluster
        .log_path()
        .parent()
        .expect("log has a parent")
        .to_path_buf()
}

#[tokio::test]
async fn starts_scram_only_and_drop_removes_everything() {
    let cluster = start(33);
    let url = cluster.url("postgres");
    let (client, conn) = tokio_postgres::connect(url.expose(), NoTls).await.unwrap();
    tokio::spawn(conn);
    let show = |name: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    assert_eq!(show("max_connections").await, "33");
    assert_eq!(show("password_encryption").await, "scram-sha-256");
    assert_eq!(show("listen_addresses").await, "127.0.0.1");
    assert_eq!(show("server_encoding").await, "UTF8");
    drop(client);

    let wrong = format!(
        "host=127.0.0.1 port={} user=postgres password=wrong dbname=postgres",
        cluster.port()
    );
    let Err(err) = tokio_postgres::connect(&wrong, NoTls).await else {
        panic!("a wrong superuser password was accepted");
    };
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err}");

    let (root, port) = (root_of(&cluster), cluster.port());
    assert!(root.join("data/PG_VERSION").is_file());
    drop(cluster);
    assert!(wait_until_gone(&root, port, Duration::from_secs(1)));
}

#[test]
fn stop_reports_success_and_cleans_up() {
    let cluster = start(10);
    let (root, port) = (root_of(&cluster), cluster.port());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    cluster.stop().unwrap();
    assert!(wait_until_gone(&root, port, Duration::from_secs(1)));
}

#[test]
fn killed_owner_leaves_nothing_behind() {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "owner_that_gets_killed",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("CLUSTER "))
        .expect("child reported its cluster");
    let mut parts = line.split(' ').skip(1);
    let root = PathBuf::from(parts.next().unwrap());
    let port: u16 = parts.next().unwrap().parse().unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(
        wait_until_gone(&root, port, Duration::from_secs(10)),
        "cluster at {} (port {port}) survived its owner",
        root.display()
    );
}

/// Not a test: the process `killed_owner_leaves_nothing_behind` starts and kills.
#[test]
#[ignore = "helper process for killed_owner_leaves_nothing_behind"]
fn owner_that_gets_killed() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let cluster = start(10);
    println!("CLUSTER {} {}", root_of(&cluster).display(), cluster.port());
    std::thread::sleep(Duration::from_secs(120));
}
