//! `egress ID`: the job's connection log from the egress gateway, one line
//! per connection (or the records as JSON), so a person or an agent that
//! saw a denial knows what to add to the manifest's `network.allow`.

use crate::egress::log::{self, ConnRecord, Via};
use crate::jobs::JobManager;
use crate::jobs::error::JobError;

use super::exit::{self, CliError};
use super::{ids, out};

/// Prints the log of job `id` (a prefix is enough).
pub fn run(jobs: &JobManager, id: &str, json: bool) -> Result<u8, CliError> {
    let id = ids::resolve(jobs, id)?;
    let record = jobs.get(&id)?;
    let records = log::read(jobs.store(), &record.id).map_err(JobError::from)?;
    if json {
        out::json(&records)?;
    } else if records.is_empty() {
        let why = if record.manifest.network.is_none() {
            "no connections (the job has no network policy, so nothing may leave)"
        } else {
            "no connections"
        };
        out::line(why)?;
    } else {
        out::text(&render(&records))?;
    }
    Ok(exit::OK)
}

/// One aligned line per record.
pub fn render(records: &[ConnRecord]) -> String {
    let dest: Vec<String> = records
        .iter()
        .map(|r| format!("{}:{}", r.host, r.port))
        .collect();
    let width = dest.iter().map(String::len).max().unwrap_or(0);
    let mut text = String::new();
    for (r, d) in records.iter().zip(&dest) {
        let verdict = if r.allowed { "allowed" } else { "denied " };
        let via = match r.via {
            Via::Connect => "connect  ",
            Via::Http => "http     ",
            Via::Anthropic => "anthropic",
            Via::Inject => "inject   ",
        };
        text.push_str(&format!(
            "{}  {verdict}  {via}  {d:<width$}  out {:>10}  in {:>10}",
            r.time, r.sent, r.received
        ));
        if let Some(why) = &r.reason {
            text.push_str("  ");
            text.push_str(why);
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_verdict_destination_bytes_and_why() {
        let mut ok = ConnRecord::now("pypi.org", 443, Via::Connect);
        ok.allowed = true;
        ok.received = 1234;
        let mut no = ConnRecord::now("evil.example", 443, Via::Connect);
        no.reason = Some("not in the job's network.allow".into());
        let text = render(&[ok, no]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("allowed") && lines[0].contains("pypi.org:443"));
        assert!(lines[0].contains("in       1234"));
        assert!(lines[1].contains("denied") && lines[1].ends_with("network.allow"));
    }
}
