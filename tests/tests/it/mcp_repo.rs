//! The repository workflow through MCP and the command line, as an agent
//! would follow it: submit a job on a repository (with a text input file),
//! read the patch from get_job_result (inline) and as a resource, then take
//! it with `delegate-host apply`.

use std::process::Command;
use std::time::Duration;

use delegate_tests::git::new_repo;
use delegate_tests::mcp::{HostEnv, Revision, connect_stdio};
use rmcp::model::{ReadResourceRequestParams, ResourceContents};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_delegates_a_fix_and_applies_the_patch() {
    let roots = tempfile::tempdir().unwrap();
    let repo = roots.path().join("project");
    new_repo(
        &repo,
        &[
            ("src/calc.sh", "add() { echo $(( $1 - $2 )); }\n"),
            ("test.sh", ". src/calc.sh\n[ \"$(add 2 3)\" = 5 ]\n"),
        ],
        "buggy",
    );

    let mut env = HostEnv::new();
    env.set("DELEGATE_REPO_ROOTS", roots.path().display().to_string());
    let client = connect_stdio(&env, Revision::Current).await;
    // "Run the tests; fix the bug": the fix goes into the repository copy,
    // the notes file comes from the manifest as plain text.
    let id = client
        .submit(json!({
            "task": "bash test.sh || sed -i 's/- \\$2/+ $2/' src/calc.sh; bash test.sh && cat NOTES.md",
            "agentType": "script",
            "repo": {"path": repo.display().to_string()},
            "files": [{"path": "NOTES.md", "text": "fixed by delegate\n"}],
            "timeout": 120,
        }))
        .await;
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());

    let result = client.ok("get_job_result", json!({"job_id": id})).await;
    let patch = &result["patch"];
    let files: Vec<&str> = patch["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["NOTES.md", "src/calc.sh"], "{result}");
    assert_eq!(patch["files"][1]["added"], 1);
    assert_eq!(patch["files"][1]["removed"], 1);
    let text = patch["text"].as_str().expect("a small patch is inline");
    assert!(text.contains("+add() { echo $(( $1 + $2 )); }"), "{text}");
    assert_eq!(patch["size"], text.len());

    let uri = patch["uri"].as_str().unwrap();
    let read = client
        .service
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .unwrap();
    match &read.contents[0] {
        ResourceContents::TextResourceContents { text: t, .. } => assert_eq!(t, text),
        other => panic!("the patch is text: {other:?}"),
    }

    let checked = env
        .command(&[
            "apply",
            &id[..8],
            "--check",
            "--json",
            "--path",
            &repo.display().to_string(),
        ])
        .output()
        .await
        .unwrap();
    assert!(checked.status.success(), "{checked:?}");
    let said: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(said["jobId"], id.as_str(), "{said}");
    assert_eq!(said["outcome"], "applies", "{said}");
    assert_eq!(said["merge"], "clean", "{said}");
    assert_eq!(said["checkOnly"], true, "{said}");

    let out = env
        .command(&["apply", &id[..8], "--path", &repo.display().to_string()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let test = Command::new("bash")
        .arg("test.sh")
        .current_dir(&repo)
        .status()
        .unwrap();
    assert!(test.success(), "the applied fix makes the test pass");
    assert_eq!(
        std::fs::read_to_string(repo.join("NOTES.md")).unwrap(),
        "fixed by delegate\n"
    );
    client.close().await;
}
