//! `logveil audit DIR` (a local directory or an `s3://bucket/prefix`).

use std::path::Path;

use crate::pipeline::{Failure, exit};

pub fn audit(dir: &Path) -> Result<String, Failure> {
    let local = super::LocalOutput::open(dir)?;
    let report = crate::audit::audit_dir(local.path())
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    if report.tables.is_empty() {
        return Err(Failure::new(
            exit::FAILED,
            format!("{} holds no tables to audit", dir.display()),
        ));
    }
    let text = report.render();
    if report.passed() {
        Ok(format!("{text}audit passed\n"))
    } else {
        Err(Failure::new(
            exit::AUDIT_FAILED,
            format!("audit failed\n{text}"),
        ))
    }
}
