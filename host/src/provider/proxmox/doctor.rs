//! `delegate-host doctor` for Proxmox (filled in below).
/// Report.
#[derive(Debug, Default)]
pub struct DoctorReport;
/// Runs the checks.
pub async fn doctor() -> DoctorReport {
    DoctorReport
}
