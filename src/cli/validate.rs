//! `logveil validate [--pipeline FILE]`.

use std::path::Path;

use crate::config::Pipeline;
use crate::pipeline::{Failure, exit};

pub fn validate(path: Option<&Path>) -> Result<String, Failure> {
    let p = Pipeline::load(path).map_err(|e| Failure::new(exit::USAGE, e.to_string()))?;
    Ok(format!(
        "pipeline {} ({}) is valid: site {}, time zone {}, k = {}, output {}\n",
        p.name,
        p.origin,
        p.site,
        p.time_zone_name,
        p.k,
        p.output.display()
    ))
}
