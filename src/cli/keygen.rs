//! `logveil keygen FILE`.

use std::path::Path;

use crate::pipeline::{Failure, exit};
use crate::pseudonymise::keys::MasterKey;

pub fn keygen(file: &Path) -> Result<String, Failure> {
    MasterKey::write_new(file).map_err(|e| Failure::new(exit::FAILED, e.to_string()))?;
    Ok(format!(
        "wrote a new 256-bit key to {} (mode 0600); keep it apart from the logs and the outputs, and delete it to shred every pseudonym made with it\n",
        file.display()
    ))
}
