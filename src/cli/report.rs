//! `logveil report OUT [--from D] [--to D] [--lang ru|en] [-o FILE]`. OUT is a local output
//! directory or an `s3://bucket/prefix`.

use std::path::{Path, PathBuf};

use crate::day::Day;
use crate::pipeline::{Failure, exit};
use crate::report::{self, i18n::Lang};

pub fn report(
    out: &Path,
    from: Option<Day>,
    to: Option<Day>,
    lang: Option<Lang>,
    file: Option<PathBuf>,
) -> Result<String, Failure> {
    let local = super::LocalOutput::open(out)?;
    let r = report::build(local.path(), from, to, lang)
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    let size = r.html.len().div_ceil(1024);
    match (file, local.remote()) {
        (None, Some(remote)) => {
            remote
                .put(crate::output::REPORT_FILE, r.html.into_bytes())
                .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
            Ok(format!(
                "wrote {}/{} ({size} KiB)\n",
                remote.shown().trim_end_matches('/'),
                crate::output::REPORT_FILE
            ))
        }
        (file, _) => {
            let file = file.unwrap_or_else(|| out.join(crate::output::REPORT_FILE));
            let tmp = file.with_extension("html.tmp");
            std::fs::write(&tmp, &r.html)
                .and_then(|()| std::fs::rename(&tmp, &file))
                .map_err(|e| {
                    Failure::new(
                        exit::FAILED,
                        format!("cannot write {}: {e}", file.display()),
                    )
                })?;
            Ok(format!("wrote {} ({size} KiB)\n", file.display()))
        }
    }
}
