//! What the server tells a client unasked: `notifications/resources/updated`
//! for a subscribed job log (legacy `resources/subscribe`, and
//! `subscriptions/listen` in 2026-07-28), and the tasks extension, where
//! `submit_job` answers with a task that `tasks/get` follows and
//! `tasks/cancel` cancels.

use std::time::{Duration, Instant};

use delegate_tests::mcp::{
    ClientOpts, HostEnv, Revision, connect_stdio, eventually, marker, pids_with, sleeper_manifest,
    ticking_manifest,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, GetTaskParams,
    ResultType, ServerNotification, SubscribeRequestParams, SubscriptionFilter, TaskPayload,
    TaskStatus, UnsubscribeRequestParams,
};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test]
#[allow(deprecated)] // resources/subscribe is the legacy revisions' API, tested on purpose
async fn legacy_subscribe_gets_log_updates_until_unsubscribed() {
    let env = HostEnv::new();
    let client = connect_stdio(&env, Revision::Legacy).await;
    let id = client.submit(ticking_manifest()).await;
    let uri = format!("delegate://jobs/{id}/log");
    client
        .service
        .subscribe(SubscribeRequestParams::new(uri.clone()))
        .await
        .expect("resources/subscribe");
    client.recorder.wait_updated(&uri, LIMIT).await;
    client
        .service
        .unsubscribe(UnsubscribeRequestParams::new(uri.clone()))
        .await
        .expect("resources/unsubscribe");
    // Updates in flight may still land; after a quiet second none may.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let settled = client.recorder.updated().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        client.recorder.updated().len(),
        settled,
        "updates after unsubscribe"
    );
    client.ok("cancel_job", json!({"job_id": id})).await;
    client.close().await;
}

#[tokio::test]
async fn listen_gets_log_and_artifact_updates_in_the_current_revision() {
    let env = HostEnv::new();
    let client = connect_stdio(&env, Revision::Current).await;
    let id = client
        .submit(json!({
            "task": "sleep 1; echo one; sleep 1; mkdir -p out; echo x > out/a.txt; echo two",
            "agentType": "script",
            "statusMode": "streaming",
            "timeout": 120,
            "artifacts": ["out/*"]
        }))
        .await;
    let log = format!("delegate://jobs/{id}/log");
    let artifact = format!("delegate://jobs/{id}/artifacts/out/a.txt");
    let mut sub = client
        .service
        .listen(
            SubscriptionFilter::builder()
                .resource_subscriptions([log.clone(), artifact.clone()])
                .build(),
        )
        .await
        .expect("subscriptions/listen");
    assert_eq!(
        sub.acknowledged().resource_subscriptions.as_deref(),
        Some(&[log.clone(), artifact.clone()][..])
    );
    let deadline = Instant::now() + LIMIT;
    let (mut saw_log, mut saw_artifact) = (false, false);
    while !(saw_log && saw_artifact) {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = tokio::time::timeout(left, sub.next())
            .await
            .expect("updates within the limit")
            .expect("subscription stream")
            .expect("subscription still open");
        if let ServerNotification::ResourceUpdatedNotification(n) = next {
            saw_log |= n.params.uri == log;
            saw_artifact |= n.params.uri == artifact;
        }
    }
    sub.cancel().await.expect("cancel the subscription");
    client.close().await;
}

fn task_of(response: CallToolResponse) -> rmcp::model::CreateTaskResult {
    match response {
        CallToolResponse::Task(t) => t,
        other => panic!("expected a task, got {other:?}"),
    }
}

#[tokio::test]
async fn tasks_follow_and_cancel_jobs() {
    let env = HostEnv::new();
    let client = connect_stdio(
        &env,
        ClientOpts {
            revision: Revision::Current,
            tasks: true,
        },
    )
    .await;
    let submit = |manifest: serde_json::Value| {
        CallToolRequestParams::new("submit_job")
            .with_arguments(json!({ "manifest": manifest }).as_object().unwrap().clone())
    };

    // A task that completes: tasks/get ends with the job's result.
    let created = task_of(
        client
            .service
            .call_tool_once(submit(
                json!({"task": "echo via-task", "agentType": "script"}),
            ))
            .await
            .expect("tools/call"),
    );
    assert_eq!(created.result_type, ResultType::TASK);
    assert_eq!(created.task.status, TaskStatus::Working);
    let task_id = created.task.task_id.clone();
    let deadline = Instant::now() + LIMIT;
    let finished = loop {
        let got = client
            .service
            .peer()
            .get_task(GetTaskParams::new(task_id.clone()))
            .await
            .expect("tasks/get");
        if got.task.status().is_terminal() {
            break got.task;
        }
        assert!(Instant::now() < deadline, "task never finished");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let TaskPayload::Completed { result } = finished.payload else {
        panic!("expected completed, got {:?}", finished.payload);
    };
    let result: CallToolResult = serde_json::from_value(serde_json::Value::Object(result)).unwrap();
    assert_ne!(result.is_error, Some(true));
    let structured = result.structured_content.unwrap();
    assert_eq!(structured["status"], "success");
    assert!(
        structured["output"]["stdout"]["text"]
            .as_str()
            .unwrap()
            .contains("via-task")
    );
    // The task is the job: the job tools know it too.
    let status = client
        .ok("get_job_status", json!({"job_id": task_id}))
        .await;
    assert_eq!(status["status"], "success");

    // tasks/cancel cancels the job and ends its processes.
    let mark = marker("task");
    let created = task_of(
        client
            .service
            .call_tool_once(submit(sleeper_manifest(&mark, 300)))
            .await
            .expect("tools/call"),
    );
    let id = created.task.task_id.clone();
    client.wait_state(&id, "running", LIMIT).await;
    client
        .service
        .peer()
        .cancel_task(CancelTaskParams::new(id.clone()))
        .await
        .expect("tasks/cancel");
    let deadline = Instant::now() + LIMIT;
    loop {
        let got = client
            .service
            .peer()
            .get_task(GetTaskParams::new(id.clone()))
            .await
            .expect("tasks/get");
        if got.task.status() == TaskStatus::Cancelled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "task not cancelled: {:?}",
            got.task
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually("the task's processes are gone", LIMIT, || {
        pids_with(&mark).is_empty()
    })
    .await;
    client.close().await;
}

#[tokio::test]
async fn clients_without_tasks_get_the_plain_handle() {
    // No tasks at all; and tasks declared only at a legacy `initialize`
    // (as the Inspector CLI does), which is not a per-request declaration.
    for opts in [
        ClientOpts {
            revision: Revision::Current,
            tasks: false,
        },
        ClientOpts {
            revision: Revision::Legacy,
            tasks: true,
        },
    ] {
        plain_handle(opts).await;
    }
}

async fn plain_handle(opts: ClientOpts) {
    let env = HostEnv::new();
    let client = connect_stdio(&env, opts).await;
    let r = client
        .service
        .call_tool_once(
            CallToolRequestParams::new("submit_job").with_arguments(
                json!({"manifest": {"task": "true", "agentType": "script"}})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .expect("tools/call");
    let CallToolResponse::Complete(result) = r else {
        panic!("a client without the tasks extension got {r:?}");
    };
    assert!(result.structured_content.unwrap()["job_id"].is_string());
    client.close().await;
}
