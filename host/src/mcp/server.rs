//! The MCP server: rmcp's `ServerHandler` over the job manager.
//!
//! One [`DelegateServer`] per session (stdio has one; streamable HTTP makes
//! one per legacy session or per stateless request). Sessions share the job
//! manager; each keeps only its own `resources/subscribe` set. The handler
//! is thin: it routes each request to [`super::calls`], [`super::tasks`],
//! [`super::subscriptions`] or the resource readers below.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CreateTaskResult, GetTaskParams,
    GetTaskResult, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, MetaObject, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
    ServerCapabilities, ServerConfig, SubscribeRequestParams, SubscriptionFilter, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, RoleServer, SubscriptionContext};
use rmcp::{ErrorData as McpError, ServerHandler};

use crate::jobs::{JobError, JobManager};
use crate::model::LogSelector;

use super::calls::{self, ToolOutcome};
use super::progress::ProgressReporter;
use super::subscriptions::{self, LegacySubscriptions};
use super::tasks;
use super::tools::{self, name};
use crate::views::resources::{self, ResourceRef};

/// How long clients may cache the (fixed) tool list and templates.
const STATIC_TTL_MS: u64 = 60_000;
/// Jobs per page of `resources/list`.
const RESOURCE_PAGE_JOBS: usize = 20;

const INSTRUCTIONS: &str = "delegate runs jobs (Claude Code, a script or any program) in \
throwaway VMs. submit_job returns a job_id at once; follow the job with wait_for_job (it \
returns within a minute, call it again while wait_timed_out is true) or get_job_status, read \
output with get_job_logs (resume with next_cursor), then collect get_job_result; artifacts are \
resources to read by URI. cancel_job stops a job and destroys its VM.";

/// The job manager a server uses. It can be replaced while serving: a
/// stdio server that found another process running the engine starts as a
/// client of the shared store and takes the engine over once that process
/// ends (see `cli::serve`).
#[derive(Clone)]
pub struct JobsHandle(Arc<RwLock<JobManager>>);

impl JobsHandle {
    /// A handle on `jobs`.
    pub fn new(jobs: JobManager) -> Self {
        JobsHandle(Arc::new(RwLock::new(jobs)))
    }

    /// The manager to use for the next request.
    pub fn current(&self) -> JobManager {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Uses `jobs` from now on.
    pub fn replace(&self, jobs: JobManager) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = jobs;
    }
}

impl From<JobManager> for JobsHandle {
    fn from(jobs: JobManager) -> Self {
        JobsHandle::new(jobs)
    }
}

/// The MCP handler for one session.
#[derive(Clone)]
pub struct DelegateServer {
    jobs: JobsHandle,
    legacy: Arc<LegacySubscriptions>,
}

impl DelegateServer {
    /// A handler for a new session.
    pub fn new(jobs: impl Into<JobsHandle>) -> Self {
        DelegateServer {
            jobs: jobs.into(),
            legacy: Arc::new(LegacySubscriptions::default()),
        }
    }

    fn retention_ms(&self) -> Option<u64> {
        self.jobs
            .current()
            .settings()
            .retention
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    async fn call(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> ToolOutcome {
        let jobs = &self.jobs.current();
        let arguments = request.arguments;
        match request.name.as_ref() {
            name::SUBMIT_JOB => calls::submit(jobs, arguments)
                .await
                .and_then(|r| calls::submit_view(&r)),
            name::GET_JOB_STATUS => off_runtime(jobs, calls::status, arguments).await,
            name::GET_JOB_RESULT => off_runtime(jobs, calls::result, arguments).await,
            name::CANCEL_JOB => calls::cancel(jobs, arguments).await,
            name::CONTINUE_JOB => super::turns::continue_job(jobs, arguments).await,
            name::RELEASE_JOB => super::turns::release_job(jobs, arguments).await,
            name::LIST_JOBS => off_runtime(jobs, calls::list, arguments).await,
            name::GET_JOB_LOGS => off_runtime(jobs, calls::logs, arguments).await,
            name::WAIT_FOR_JOB => {
                let progress = context
                    .meta
                    .get_progress_token()
                    .map(|token| ProgressReporter::start(context.peer.clone(), token));
                calls::wait(jobs, arguments, progress, context.ct.clone()).await
            }
            other => Err(format!("unknown tool {other:?}")),
        }
    }

    async fn read_log(&self, uri: &str, job_id: String) -> Result<ReadResourceResult, McpError> {
        let jobs = self.jobs.current();
        let cap = jobs.settings().max_resource_bytes;
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let slice = jobs
            .blocking(move |j| j.read_log(&job_id, LogSelector::Combined, 0, cap))
            .await
            .and_then(|r| r)
            .map_err(resource_error)?;
        let truncated = !slice.complete && slice.data.len() >= cap;
        let text = String::from_utf8_lossy(&slice.data).into_owned();
        let mut contents = ResourceContents::text(text, uri);
        if truncated {
            let mut meta = MetaObject::new();
            meta.insert("truncated".into(), true.into());
            meta.insert("next_cursor".into(), slice.next_cursor.into());
            meta.insert(
                "hint".into(),
                "the log is longer than DELEGATE_MAX_RESOURCE_BYTES; read on with get_job_logs from next_cursor".into(),
            );
            contents = contents.with_meta(meta);
        }
        Ok(ReadResourceResult::new(vec![contents]).with_ttl_ms(0))
    }

    async fn read_patch(
        &self,
        uri: &str,
        job_id: String,
        turn: bool,
    ) -> Result<ReadResourceResult, McpError> {
        let jobs = self.jobs.current();
        let cap = jobs.settings().max_resource_bytes;
        let bytes = jobs
            .blocking(move |j| {
                if turn {
                    j.read_turn_patch(&job_id, cap)
                } else {
                    j.read_patch(&job_id, cap)
                }
            })
            .await
            .and_then(|r| r)
            .map_err(resource_error)?;
        // `git diff --binary` is ASCII; lossy decoding only guards the type.
        let contents = ResourceContents::text(String::from_utf8_lossy(&bytes).into_owned(), uri)
            .with_mime_type("text/x-diff");
        Ok(ReadResourceResult::new(vec![contents]).with_ttl_ms(STATIC_TTL_MS))
    }

    async fn read_artifact(
        &self,
        uri: &str,
        job_id: String,
        path: String,
    ) -> Result<ReadResourceResult, McpError> {
        let jobs = self.jobs.current();
        let cap = jobs.settings().max_resource_bytes;
        let mime = resources::mime_type(&path);
        let read_path = path.clone();
        // Reading means inflating a tar.gz: off the async threads.
        let bytes = jobs
            .blocking(move |j| j.read_artifact(&job_id, &read_path, cap))
            .await
            .and_then(|r| r)
            .map_err(resource_error)?;
        let contents = if resources::is_text_mime(mime) {
            ResourceContents::text(String::from_utf8_lossy(&bytes).into_owned(), uri)
                .with_mime_type(mime)
        } else if mime == "application/octet-stream"
            && !bytes.contains(&0)
            && std::str::from_utf8(&bytes).is_ok()
        {
            // An unknown extension holding text (README, Makefile): text.
            ResourceContents::text(String::from_utf8_lossy(&bytes).into_owned(), uri)
        } else {
            ResourceContents::blob(
                base64::engine::general_purpose::STANDARD.encode(&bytes),
                uri,
            )
            .with_mime_type(mime)
        };
        // Artifacts never change once stored.
        Ok(ReadResourceResult::new(vec![contents]).with_ttl_ms(STATIC_TTL_MS))
    }
}

/// Maps a manager error on a resource read to the protocol error clients
/// expect: unknown things are "not found", the rest keeps its message.
/// Runs a tool body that uses the manager's sync API off the runtime
/// threads ([`JobManager::blocking`]).
async fn off_runtime(
    jobs: &JobManager,
    body: fn(&JobManager, Option<rmcp::model::JsonObject>) -> ToolOutcome,
    arguments: Option<rmcp::model::JsonObject>,
) -> ToolOutcome {
    jobs.blocking(move |j| body(j, arguments))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
}

fn resource_error(e: JobError) -> McpError {
    match e {
        JobError::NotFound(_) => McpError::resource_not_found(e.to_string(), None),
        JobError::InvalidArgument { .. } | JobError::TooLarge { .. } => {
            McpError::invalid_params(e.to_string(), None)
        }
        other => {
            tracing::warn!(error = %other, "resource read failed");
            McpError::internal_error(other.to_string(), None)
        }
    }
}

fn parse_uri(uri: &str) -> Result<ResourceRef, McpError> {
    resources::parse(uri).map_err(|e| McpError::resource_not_found(e.to_string(), None))
}

impl ServerHandler for DelegateServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_tasks()
                .build(),
        )
        .with_server_info(
            Implementation::new("delegate-host", env!("CARGO_PKG_VERSION"))
                .with_title("delegate: run jobs in throwaway VMs"),
        )
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(
            ListToolsResult::with_all_items(tools::all().as_ref().clone())
                .with_ttl_ms(STATIC_TTL_MS),
        )
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::get(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if tools::get(&request.name).is_none() {
            return Err(McpError::invalid_params(
                format!("unknown tool {:?}", request.name),
                None,
            ));
        }
        // The extension is declared in a request's own capabilities
        // (2026-07-28). A legacy session that listed it at `initialize` gets
        // the plain handle: clients such as the Inspector CLI declare it
        // there without following tasks.
        let wants_task = request.name == name::SUBMIT_JOB
            && context
                .meta
                .client_capabilities()
                .is_some_and(|caps| caps.supports_tasks());
        if wants_task {
            // The same submission; the answer is a task that follows the job.
            return Ok(
                match calls::submit(&self.jobs.current(), request.arguments).await {
                    Ok(record) => CallToolResponse::Task(CreateTaskResult::new(tasks::task(
                        &record,
                        self.retention_ms(),
                    ))),
                    Err(message) => CallToolResponse::Complete(calls::tool_error(message)),
                },
            );
        }
        let outcome = self.call(request, context).await;
        Ok(CallToolResponse::Complete(
            outcome.unwrap_or_else(calls::tool_error),
        ))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let task_id = request.task_id;
        let record = self
            .jobs
            .current()
            .blocking(move |j| j.get(&task_id))
            .await
            .and_then(|r| r)
            .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
        Ok(GetTaskResult::new(tasks::detailed(
            &record,
            self.retention_ms(),
        )))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // Acknowledged either way: a task that already finished keeps its
        // final state (cancellation is cooperative in the extension).
        self.jobs
            .current()
            .cancel(&request.task_id)
            .await
            .map(|_| ())
            .map_err(|e| McpError::invalid_params(e.to_string(), None))
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let cursor = request.and_then(|r| r.cursor);
        // Artifacts are listed only for jobs that have some; the record is
        // read only for final jobs, the only ones that may.
        let (page, mut finals) = self
            .jobs
            .current()
            .blocking(move |j| {
                let page = j.list(None, RESOURCE_PAGE_JOBS, cursor.as_deref())?;
                let finals: std::collections::HashMap<_, _> = page
                    .items
                    .iter()
                    .filter(|s| s.status.is_final())
                    .filter_map(|s| Some((s.job_id.clone(), j.get(&s.job_id).ok()?)))
                    .collect();
                Ok::<_, JobError>((page, finals))
            })
            .await
            .and_then(|r| r)
            .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
        let mut out = Vec::new();
        for summary in page.items {
            out.push(
                Resource::new(
                    resources::log_uri(&summary.job_id),
                    format!("log of job {}", summary.job_id),
                )
                .with_description(format!(
                    "{} job ({}): {}",
                    summary.agent_type, summary.status, summary.task
                ))
                .with_mime_type("text/plain"),
            );
            if let Some(record) = finals.remove(&summary.job_id) {
                if let Some(p) = record.result.as_ref().and_then(|r| r.patch.as_ref()) {
                    out.push(
                        Resource::new(resources::patch_uri(&record.id), "patch")
                            .with_description(format!(
                                "patch of job {} ({} files, sha256 {})",
                                record.id,
                                p.files.len(),
                                p.sha256
                            ))
                            .with_mime_type("text/x-diff")
                            .with_size(p.size),
                    );
                }
                for a in &record.artifacts {
                    out.push(
                        Resource::new(resources::artifact_uri(&record.id, &a.path), a.path.clone())
                            .with_description(format!(
                                "artifact of job {} (sha256 {})",
                                record.id, a.sha256
                            ))
                            .with_mime_type(resources::mime_type(&a.path))
                            .with_size(a.size),
                    );
                }
            }
        }
        let mut result = ListResourcesResult::with_all_items(out).with_ttl_ms(0);
        result.next_cursor = page.next_cursor;
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(resources::LOG_TEMPLATE, "job log")
                .with_title("Job log")
                .with_description("Both output streams of a job in arrival order (capped; get_job_logs reads any part).")
                .with_mime_type("text/plain"),
            ResourceTemplate::new(resources::PATCH_TEMPLATE, "job patch")
                .with_title("Job patch")
                .with_description("Every change the job made to the repository it was given, as git diff --binary (delegate-host apply applies it).")
                .with_mime_type("text/x-diff"),
            ResourceTemplate::new(resources::TURN_PATCH_TEMPLATE, "turn patch")
                .with_title("Turn patch")
                .with_description("A follow-up turn's own change to a persistent job's repository, against where the previous turn left it (delegate-host apply --turn).")
                .with_mime_type("text/x-diff"),
            ResourceTemplate::new(resources::ARTIFACT_TEMPLATE, "job artifact")
                .with_title("Job artifact")
                .with_description("A file the job left, by its path in the workspace: text, or a base64 blob for binary types."),
        ])
        .with_ttl_ms(STATIC_TTL_MS))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri;
        let result = match parse_uri(&uri)? {
            ResourceRef::Log { job_id } => self.read_log(&uri, job_id).await?,
            ResourceRef::Patch { job_id, turn } => self.read_patch(&uri, job_id, turn).await?,
            ResourceRef::Artifact { job_id, path } => {
                self.read_artifact(&uri, job_id, path).await?
            }
        };
        Ok(result.into())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // A delegate URI must name a job that exists; any other URI is
        // accepted and tracked like the spec asks, and simply never changes.
        if request.uri.starts_with("delegate:") {
            let target = parse_uri(&request.uri)?;
            self.jobs
                .current()
                .get(target.job_id())
                .map_err(|e| McpError::resource_not_found(e.to_string(), None))?;
        }
        self.legacy
            .subscribe(&self.jobs.current(), context.peer.clone(), request.uri);
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.legacy.unsubscribe(&request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let ours: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| resources::parse(uri).is_ok())
            .cloned()
            .collect();
        Some(
            SubscriptionFilter::builder()
                .resource_subscriptions(ours)
                .build(),
        )
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        subscriptions::listen(&self.jobs.current(), context).await
    }
}
