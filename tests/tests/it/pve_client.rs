//! The Proxmox client against the PVE simulator: TLS trust (CA file,
//! pinned fingerprint, neither, insecure), token and ticket auth (CSRF,
//! renewal), both error shapes, 401/403/400/595, tasks, and retries.

use std::time::Duration;

use delegate_host::provider::proxmox::PveError;
use delegate_host::provider::proxmox::client::api::CloneOptions;
use delegate_host::provider::proxmox::client::{FailureKind, Params, PveClient};
use delegate_host::provider::proxmox::settings::{Credentials, TlsSettings};
use delegate_host::resolve::Secret;
use delegate_host::retry::RetryPolicy;
use delegate_tests::pve_host::{sim_tls, sim_token};
use delegate_tests::pve_sim::{self, Grant, PveSim, PveVersion, SimConfig};

fn fast_retry() -> RetryPolicy {
    RetryPolicy::new(4, Duration::from_millis(5), Duration::from_millis(20))
}

fn client(sim: &PveSim) -> PveClient {
    PveClient::build(&sim.url, sim_token(), &sim_tls(sim), fast_retry()).unwrap()
}

#[tokio::test]
async fn tls_trust_by_fingerprint_ca_file_or_explicit_insecure() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    // Pinned fingerprint.
    let v = client(&sim).version().await.unwrap();
    assert_eq!(v.major(), Some(9));
    // CA file.
    let ca = TlsSettings {
        ca_pem: Some(sim.ca_pem.clone().into_bytes()),
        ..TlsSettings::default()
    };
    let c = PveClient::build(&sim.url, sim_token(), &ca, fast_retry()).unwrap();
    assert_eq!(c.nodes().await.unwrap().len(), 3);
    // Neither: the system roots do not know the cluster CA.
    let c = PveClient::build(&sim.url, sim_token(), &TlsSettings::default(), fast_retry()).unwrap();
    let err = c.version().await.unwrap_err();
    assert!(matches!(err, PveError::Transport { .. }), "{err}");
    // A wrong pin fails, naming the certificate's real fingerprint.
    let wrong = TlsSettings {
        fingerprints: vec![[7u8; 32]],
        ..TlsSettings::default()
    };
    let c = PveClient::build(&sim.url, sim_token(), &wrong, fast_retry()).unwrap();
    let err = c.version().await.unwrap_err();
    let chain = format!("{:?}", anyhow_chain(&err));
    assert!(chain.contains(&sim.fingerprint_text()), "{chain}");
    // Insecure is explicit.
    let insecure = TlsSettings {
        insecure: true,
        ..TlsSettings::default()
    };
    let c = PveClient::build(&sim.url, sim_token(), &insecure, fast_retry()).unwrap();
    c.version().await.unwrap();
}

fn anyhow_chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out
}

#[tokio::test]
async fn wrong_token_is_unauthorized_without_retry() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let bad = Credentials::Token {
        id: pve_sim::TOKEN_ID.into(),
        secret: Secret::new("00000000-0000-0000-0000-000000000000"),
    };
    let c = PveClient::build(&sim.url, bad, &sim_tls(&sim), fast_retry()).unwrap();
    let before = sim.requests();
    let err = c.nodes().await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::Auth);
    assert!(err.to_string().contains(pve_sim::TOKEN_ID), "{err}");
    assert_eq!(sim.requests() - before, 1, "a 401 is not retried");
}

#[tokio::test]
async fn ticket_login_csrf_and_renewal() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let creds = Credentials::Ticket {
        user: pve_sim::USER.into(),
        password: Secret::new(pve_sim::PASSWORD),
    };
    let c = PveClient::build(&sim.url, creds, &sim_tls(&sim), fast_retry()).unwrap();
    assert_eq!(c.nodes().await.unwrap().len(), 3);
    // A write needs the CSRF token: clone the template and change its config.
    let upid = c
        .clone_vm("pve1", 9000, 90000, &CloneOptions::default())
        .await
        .unwrap();
    c.wait_task(&upid, Duration::from_secs(30)).await.unwrap();
    c.set_config("pve1", 90000, Params::new().int("cores", 2))
        .await
        .unwrap();
    assert_eq!(
        c.vm_config("pve1", 90000)
            .await
            .unwrap()
            .text("cores")
            .as_deref(),
        Some("2")
    );
    // Past 90 minutes the ticket is renewed with itself as the password.
    c.age_ticket(Duration::from_secs(91 * 60)).await;
    c.nodes().await.unwrap();
    assert_eq!(sim.ticket_renewals(), 1);

    let wrong = Credentials::Ticket {
        user: pve_sim::USER.into(),
        password: Secret::new("nope"),
    };
    let c = PveClient::build(&sim.url, wrong, &sim_tls(&sim), fast_retry()).unwrap();
    let err = c.nodes().await.unwrap_err();
    assert_eq!(err.kind(), FailureKind::Auth, "{err}");
}

#[tokio::test]
async fn parameter_errors_are_per_field_and_not_retried() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let c = client(&sim);
    let before = sim.requests();
    let err = c
        .call(
            delegate_host::provider::proxmox::client::Method::Post,
            "/nodes/pve1/qemu/9000/clone",
            Params::new().int("newid", 42).text("bogus", "x"),
        )
        .await
        .unwrap_err();
    assert_eq!(sim.requests() - before, 1);
    match &err {
        PveError::Api {
            status,
            errors,
            message,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(message, "Parameter verification failed.");
            assert_eq!(errors["newid"], "value must have a minimum value of 100");
            assert!(errors["bogus"].contains("not defined in schema"));
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn both_error_shapes_carry_the_message() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let c = client(&sim);
    for legacy in [false, true] {
        sim.faults(|f| f.legacy_error_shape = legacy);
        let err = c.vm_config("pve1", 12345).await.unwrap_err();
        assert_eq!(err.status(), Some(500));
        assert_eq!(
            err.message(),
            "Configuration file 'nodes/pve1/qemu-server/12345.conf' does not exist",
            "legacy={legacy}"
        );
        assert_eq!(err.kind(), FailureKind::NotFound);
    }
}

#[tokio::test]
async fn offline_node_is_595_and_retried_then_reported() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let c = client(&sim);
    sim.set_node_online("pve3", false);
    let before = sim.requests();
    let err = c.storages("pve3").await.unwrap_err();
    assert!(
        matches!(err, PveError::Unreachable { status: 595, .. }),
        "{err}"
    );
    assert_eq!(sim.requests() - before, 4, "595 is retried");
    let nodes = c.nodes().await.unwrap();
    let pve3 = nodes.iter().find(|n| n.node == "pve3").unwrap();
    assert_eq!(pve3.status, "offline");
}

#[tokio::test]
async fn tasks_succeed_or_fail_with_their_log() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let c = client(&sim);
    let upid = c
        .clone_vm("pve1", 9000, 90001, &CloneOptions::default())
        .await
        .unwrap();
    assert_eq!(upid.node, "pve1");
    assert_eq!(upid.kind, "qmclone");
    // While cloning, the new VM is locked.
    let st = c.vm_status("pve1", 90001).await.unwrap();
    assert_eq!(st.lock.as_deref(), Some("clone"));
    let err = c
        .set_config("pve1", 90001, Params::new().int("cores", 2))
        .await;
    // Either the lock was retried away or still held after all attempts.
    if let Err(e) = err {
        assert_eq!(e.kind(), FailureKind::Locked, "{e}");
    }
    c.wait_task(&upid, Duration::from_secs(30)).await.unwrap();
    assert!(c.vm_status("pve1", 90001).await.unwrap().lock.is_none());

    sim.faults(|f| f.clone_failures = 1);
    let upid = c
        .clone_vm("pve1", 9000, 90002, &CloneOptions::default())
        .await
        .unwrap();
    let err = c
        .wait_task(&upid, Duration::from_secs(30))
        .await
        .unwrap_err();
    match &err {
        PveError::Task {
            exitstatus,
            log_tail,
            ..
        } => {
            assert!(exitstatus.starts_with("clone failed:"), "{exitstatus}");
            assert!(
                log_tail.iter().any(|l| l.starts_with("TASK ERROR")),
                "{log_tail:?}"
            );
        }
        other => panic!("{other}"),
    }
    // A failed clone leaves no VM behind.
    assert!(c.vm_config("pve1", 90002).await.is_err());
}

#[tokio::test]
async fn lock_timeouts_and_5xx_are_retried_4xx_are_not() {
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let c = client(&sim);
    let upid = c
        .clone_vm("pve1", 9000, 90003, &CloneOptions::default())
        .await
        .unwrap();
    c.wait_task(&upid, Duration::from_secs(30)).await.unwrap();
    sim.faults(|f| {
        f.config_lock_timeouts = 1;
        f.cfs_lock_timeouts = 1;
    });
    c.set_config("pve1", 90003, Params::new().text("tags", "delegate"))
        .await
        .unwrap();
    sim.faults(|f| f.server_errors = 2);
    c.nodes().await.unwrap();
    // Too many lock timeouts: the last error is returned with PVE's text.
    sim.faults(|f| f.config_lock_timeouts = 10);
    let err = c
        .set_config("pve1", 90003, Params::new().int("cores", 3))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), FailureKind::LockTimeout);
    assert!(err.message().contains("can't lock file"), "{err}");
}

#[tokio::test]
async fn guest_agent_privileges_follow_the_version() {
    // PVE 9: VM.GuestAgent.FileWrite is needed; VM.Monitor is not enough.
    let sim = PveSim::start(SimConfig::standard()).await.unwrap();
    let c = client(&sim);
    let upid = c
        .clone_vm("pve1", 9000, 90004, &CloneOptions::default())
        .await
        .unwrap();
    c.wait_task(&upid, Duration::from_secs(30)).await.unwrap();
    c.start_vm("pve1", 90004, Duration::from_secs(30))
        .await
        .unwrap();
    let monitor_only = vec![Grant {
        path: "/".into(),
        privs: ["VM.Monitor", "VM.Audit"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        propagate: true,
    }];
    sim.add_token("mon@pve!t", "s-1", monitor_only.clone());
    let mon = PveClient::build(
        &sim.url,
        Credentials::Token {
            id: "mon@pve!t".into(),
            secret: Secret::new("s-1"),
        },
        &sim_tls(&sim),
        fast_retry(),
    )
    .unwrap();
    let err = mon
        .agent_file_write("pve1", 90004, "/tmp/x", "hello")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert_eq!(err.kind(), FailureKind::Forbidden);
    assert!(err.message().contains("VM.GuestAgent.FileWrite"), "{err}");

    // PVE 8: the same token may write.
    let mut cfg = SimConfig::standard();
    cfg.version = PveVersion::V8;
    let sim8 = PveSim::start(cfg).await.unwrap();
    let c8 = client(&sim8);
    assert_eq!(c8.version().await.unwrap().major(), Some(8));
    let upid = c8
        .clone_vm("pve1", 9000, 90005, &CloneOptions::default())
        .await
        .unwrap();
    c8.wait_task(&upid, Duration::from_secs(30)).await.unwrap();
    c8.start_vm("pve1", 90005, Duration::from_secs(30))
        .await
        .unwrap();
    sim8.add_token("mon@pve!t", "s-1", monitor_only);
    let mon8 = PveClient::build(
        &sim8.url,
        Credentials::Token {
            id: "mon@pve!t".into(),
            secret: Secret::new("s-1"),
        },
        &sim_tls(&sim8),
        fast_retry(),
    )
    .unwrap();
    // The agent may still be booting: retry until it answers.
    let mut last = None;
    for _ in 0..100 {
        match mon8
            .agent_file_write("pve1", 90005, "/tmp/x", "hello")
            .await
        {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => {
                assert_eq!(e.kind(), FailureKind::AgentNotRunning, "{e}");
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(last.is_none(), "{last:?}");
    let written = std::fs::read_to_string(sim8.vm_root(90005).unwrap().join("tmp/x")).unwrap();
    assert_eq!(written, "hello");
}
