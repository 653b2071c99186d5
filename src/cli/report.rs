//! `logveil report OUT [--from D] [--to D] [--lang ru|en] [-o FILE]`.

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
    if !out.join("_runs").is_dir() {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "{} is not a logveil output directory (no _runs/); give the `output` of a pipeline",
                out.display()
            ),
        ));
    }
    let r = report::build(out, from, to, lang)
        .map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    let file = file.unwrap_or_else(|| out.join("report.html"));
    let tmp = file.with_extension("html.tmp");
    std::fs::write(&tmp, &r.html)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| {
            Failure::new(
                exit::FAILED,
                format!("cannot write {}: {e}", file.display()),
            )
        })?;
    Ok(format!(
        "wrote {} ({} KiB)\n",
        file.display(),
        r.html.len().div_ceil(1024)
    ))
}
